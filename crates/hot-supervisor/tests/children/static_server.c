/* A minimal HTTP server for the empty-root test (tests/scratch.rs): built
 * with `cc -static`, so that it runs where there is no C library, as the
 * static supervisor does. It takes its listener from fd 3 (LISTEN_FDS),
 * sends READY=1 to NOTIFY_SOCKET, answers every request with its
 * generation and closes the connection; on SIGTERM it stops accepting,
 * finishes the connection in hand and exits 0. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static volatile sig_atomic_t stopping = 0;

static void on_term(int sig) {
    (void)sig;
    stopping = 1;
}

static void notify(const char *msg) {
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || !*path) return;
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    size_t len = strlen(path);
    if (len >= sizeof addr.sun_path) return;
    memcpy(addr.sun_path, path, len);
    if (path[0] == '@') addr.sun_path[0] = 0;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return;
    sendto(fd, msg, strlen(msg), 0, (struct sockaddr *)&addr,
           (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len));
    close(fd);
}

int main(void) {
    const char *fds = getenv("LISTEN_FDS");
    if (!fds || atoi(fds) < 1) {
        fprintf(stderr, "static_server: no LISTEN_FDS\n");
        return 1;
    }
    const char *g = getenv("SUPERVISOR_GENERATION");
    char body[128], reply[256];
    int blen = snprintf(body, sizeof body, "generation %s pid %d\n", g ? g : "0", (int)getpid());
    int rlen = snprintf(reply, sizeof reply,
                        "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
                        blen, body);
    struct sigaction sa = {.sa_handler = on_term};
    sigaction(SIGTERM, &sa, NULL); /* no SA_RESTART: poll returns EINTR */
    notify("READY=1");
    struct pollfd p = {.fd = 3, .events = POLLIN};
    while (!stopping) {
        int n = poll(&p, 1, -1);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) continue;
        int c = accept4(3, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0) continue;
        char buf[4096];
        ssize_t got = 0, r;
        /* Read the head (up to the blank line), then answer. */
        while ((r = read(c, buf + got, sizeof buf - 1 - (size_t)got)) > 0) {
            got += r;
            buf[got] = 0;
            if (strstr(buf, "\r\n\r\n") || (size_t)got >= sizeof buf - 1) break;
        }
        if (got > 0) {
            ssize_t off = 0;
            while (off < rlen && (r = write(c, reply + off, (size_t)(rlen - off))) > 0) off += r;
        }
        close(c);
    }
    close(3);
    notify("STOPPING=1");
    return 0;
}
