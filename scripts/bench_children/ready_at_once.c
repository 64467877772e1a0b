/* A child that is ready at once: it sends READY=1 to NOTIFY_SOCKET, then
 * waits for SIGTERM or SIGINT and exits 0. It never accepts: the benchmark
 * measures what the supervisor does around a start, not a server. Built by
 * scripts/bench_steer.py with the system C compiler (cc -O2). */
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int main(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigprocmask(SIG_BLOCK, &set, NULL);
    const char *path = getenv("NOTIFY_SOCKET");
    if (path != NULL) {
        struct sockaddr_un addr = {.sun_family = AF_UNIX};
        size_t n = strlen(path);
        int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd >= 0 && n > 0 && n < sizeof addr.sun_path) {
            memcpy(addr.sun_path, path, n);
            if (path[0] == '@') {
                addr.sun_path[0] = '\0';
            }
            sendto(fd, "READY=1", 7, 0, (struct sockaddr *)&addr,
                   (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n));
        }
    }
    int sig = 0;
    sigwait(&set, &sig);
    return 0;
}
