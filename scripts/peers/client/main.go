// The Go client of the peer benchmark (scripts/bench_peers.py), built with
// Debian's Go and no module:
//
//	GO111MODULE=off go build -o peer-client .
//
// peer-client load URL CONNS SECONDS SAMPLES
//
//	CONNS goroutines send GET URL back to back for SECONDS through one
//	net/http Transport with keep-alives, as a Go service calls another. Go's
//	Transport retries an idempotent request once, on a new connection, when
//	a kept-alive connection it reused was closed before any of the answer
//	came: that is the "client that retries idempotent requests" of the
//	benchmark. Prints "ok N failed M" and writes one line per request to
//	SAMPLES: "start_unix_ns latency_ns ok(1|0)".
//
// peer-client probe ADDR SECONDS INTERVAL_US OUT
//
//	One new connection every INTERVAL_US microseconds for SECONDS, each with
//	"GET / HTTP/1.1" and "Connection: close"; one line per probe to OUT:
//	"start_unix_ns end_unix_ns VERSION PID", or "start end - error" when it
//	failed. The benchmark reads from it when the new version first answered.
package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

func main() {
	if len(os.Args) != 6 {
		fmt.Fprintln(os.Stderr, "usage: peer-client load URL CONNS SECONDS SAMPLES | probe ADDR SECONDS INTERVAL_US OUT")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "load":
		conns, _ := strconv.Atoi(os.Args[3])
		secs, _ := strconv.ParseFloat(os.Args[4], 64)
		load(os.Args[2], conns, time.Duration(secs*float64(time.Second)), os.Args[5])
	case "probe":
		secs, _ := strconv.ParseFloat(os.Args[3], 64)
		us, _ := strconv.Atoi(os.Args[4])
		probe(os.Args[2], time.Duration(secs*float64(time.Second)), time.Duration(us)*time.Microsecond, os.Args[5])
	default:
		fmt.Fprintln(os.Stderr, "peer-client: unknown mode", os.Args[1])
		os.Exit(2)
	}
}

type sample struct {
	start   int64
	latency int64
	ok      bool
}

func load(url string, conns int, d time.Duration, out string) {
	tr := &http.Transport{MaxIdleConns: conns, MaxIdleConnsPerHost: conns}
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	end := time.Now().Add(d)
	results := make([][]sample, conns)
	var wg sync.WaitGroup
	for i := 0; i < conns; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for time.Now().Before(end) {
				t0 := time.Now()
				ok := false
				resp, err := client.Get(url)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					ok = err == nil && resp.StatusCode == 200
				}
				results[i] = append(results[i], sample{t0.UnixNano(), int64(time.Since(t0)), ok})
			}
		}(i)
	}
	wg.Wait()
	f, err := os.Create(out)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	w := bufio.NewWriter(f)
	okN, failed := 0, 0
	for _, rs := range results {
		for _, s := range rs {
			b := 0
			if s.ok {
				b = 1
				okN++
			} else {
				failed++
			}
			fmt.Fprintf(w, "%d %d %d\n", s.start, s.latency, b)
		}
	}
	w.Flush()
	f.Close()
	fmt.Printf("ok %d failed %d\n", okN, failed)
}

func probe(addr string, d time.Duration, every time.Duration, out string) {
	f, err := os.Create(out)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	w := bufio.NewWriter(f)
	end := time.Now().Add(d)
	req := []byte("GET / HTTP/1.1\r\nHost: peer\r\nConnection: close\r\n\r\n")
	buf := make([]byte, 4096)
	next := time.Now()
	for time.Now().Before(end) {
		t0 := time.Now()
		answer := "- error"
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err == nil {
			c.SetDeadline(time.Now().Add(2 * time.Second))
			if _, err = c.Write(req); err == nil {
				n := 0
				for err == nil && n < len(buf) {
					var k int
					k, err = c.Read(buf[n:])
					n += k
				}
				if i := strings.Index(string(buf[:n]), "version "); i >= 0 {
					fields := strings.Fields(string(buf[i:n]))
					if len(fields) >= 4 {
						answer = fields[1] + " " + fields[3]
					}
				}
			}
			c.Close()
		}
		fmt.Fprintf(w, "%d %d %s\n", t0.UnixNano(), time.Now().UnixNano(), answer)
		next = next.Add(every)
		if s := time.Until(next); s > 0 {
			time.Sleep(s)
		} else {
			next = time.Now()
		}
	}
	w.Flush()
	f.Close()
}
