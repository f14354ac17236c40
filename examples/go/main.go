// go-example: the Go example application of twelve (standard library only).
//
//	go-example            serve HTTP on APP_PORT (paas-charm 1.x), else PORT (main), else
//	                      8080 (Prometheus metrics at /metrics and /metrics/runtime, and
//	                      at METRICS_PATH on METRICS_PORT, APP_METRICS_* for 1.x)
//	go-example worker     log "worker alive" every few seconds
//	go-example scheduler  log "scheduler alive" every few seconds
package main

import (
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

var (
	started  = time.Now()
	requests atomic.Uint64
)

// metrics serves the application's own series in the Prometheus text format (0.0.4),
// scraped by the charm's default job (metrics-port 8080, metrics-path /metrics).
func metrics(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	fmt.Fprintf(w, "# HELP go_example_up Whether the application serves.\n")
	fmt.Fprintf(w, "# TYPE go_example_up gauge\ngo_example_up 1\n")
	fmt.Fprintf(w, "# HELP go_example_requests_total HTTP requests served, this one included.\n")
	fmt.Fprintf(w, "# TYPE go_example_requests_total counter\ngo_example_requests_total %d\n", requests.Load())
}

// runtimeMetrics serves Go runtime series, scraped by the extra job of
// charm/paas-config.yaml (go-example-runtime).
func runtimeMetrics(w http.ResponseWriter, r *http.Request) {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	fmt.Fprintf(w, "# HELP go_example_goroutines Goroutines that exist.\n")
	fmt.Fprintf(w, "# TYPE go_example_goroutines gauge\ngo_example_goroutines %d\n", runtime.NumGoroutine())
	fmt.Fprintf(w, "# HELP go_example_heap_alloc_bytes Bytes of allocated heap objects.\n")
	fmt.Fprintf(w, "# TYPE go_example_heap_alloc_bytes gauge\ngo_example_heap_alloc_bytes %d\n", m.HeapAlloc)
	fmt.Fprintf(w, "# HELP go_example_uptime_seconds Seconds since the process started.\n")
	fmt.Fprintf(w, "# TYPE go_example_uptime_seconds gauge\ngo_example_uptime_seconds %.3f\n", time.Since(started).Seconds())
}

func port() string {
	for _, name := range []string{"APP_PORT", "PORT"} {
		if p := os.Getenv(name); p != "" {
			return p
		}
	}
	return "8080"
}

// firstenv returns the first of names that is set, else "".
func firstenv(names ...string) string {
	for _, name := range names {
		if v := os.Getenv(name); v != "" {
			return v
		}
	}
	return ""
}

func getenv(name, fallback string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return fallback
}

// environ returns the whole process environment as a map.
func environ() map[string]string {
	env := make(map[string]string)
	for _, kv := range os.Environ() {
		if i := strings.IndexByte(kv, '='); i >= 0 {
			env[kv[:i]] = kv[i+1:]
		}
	}
	return env
}

func serve() {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "%s from go-example\n", getenv("APP_GREETING", "hello"))
	})
	mux.HandleFunc("/env", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(environ())
	})
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/metrics", metrics)
	mux.HandleFunc("/metrics/runtime", runtimeMetrics)
	counted := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		mux.ServeHTTP(w, r)
	})
	// The charm's metrics port (paas-charm main's METRICS_PORT/METRICS_PATH, 1.x's
	// APP_METRICS_*): metrics on a port of their own when it differs from the app's.
	path := firstenv("METRICS_PATH", "APP_METRICS_PATH")
	if path == "" {
		path = "/metrics"
	}
	mp := firstenv("METRICS_PORT", "APP_METRICS_PORT")
	if (mp == "" || mp == port()) && path != "/metrics" && path != "/metrics/runtime" {
		mux.HandleFunc(path, metrics)
	}
	if mp != "" && mp != port() {
		metricsMux := http.NewServeMux()
		metricsMux.HandleFunc(path, metrics)
		go func() {
			log.Printf("go-example metrics on :%s%s", mp, path)
			log.Fatal(http.ListenAndServe(":"+mp, metricsMux))
		}()
	}
	addr := ":" + port()
	log.Printf("go-example listening on %s", addr)
	log.Fatal(http.ListenAndServe(addr, counted))
}

func heartbeat(kind string) {
	interval := 3 * time.Second
	if v := os.Getenv("HEARTBEAT_INTERVAL"); v != "" {
		if d, err := time.ParseDuration(v + "s"); err == nil && d > 0 {
			interval = d
		}
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, os.Interrupt)
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	greeting := getenv("APP_GREETING", "<unset>")
	for beat := 1; ; beat++ {
		fmt.Printf("%s alive beat=%d pid=%d greeting=%s\n", kind, beat, os.Getpid(), greeting)
		select {
		case <-stop:
			return
		case <-ticker.C:
		}
	}
}

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "worker", "scheduler":
			heartbeat(os.Args[1])
			return
		default:
			fmt.Fprintf(os.Stderr, "usage: %s [worker|scheduler]\n", os.Args[0])
			os.Exit(2)
		}
	}
	serve()
}
