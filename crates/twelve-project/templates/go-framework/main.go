// {{name}}: a hello-world Go application (standard library only), serving Prometheus
// metrics where the 12-factor charm scrapes them.
package main

import (
	"fmt"
	"log"
	"net/http"
	"os"
	"sync/atomic"
)

// requests counts the HTTP requests served (the metrics endpoint's included).
var requests atomic.Uint64

// env returns the first of names that is set: paas-charm main's names (PORT,
// METRICS_PORT, METRICS_PATH) come first, then 1.x's APP_ ones; else fallback.
func env(fallback string, names ...string) string {
	for _, name := range names {
		if v := os.Getenv(name); v != "" {
			return v
		}
	}
	return fallback
}

// metrics serves the app's series in Prometheus' text format.
func metrics(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	fmt.Fprintf(w, "# HELP app_requests_total HTTP requests served.\n")
	fmt.Fprintf(w, "# TYPE app_requests_total counter\napp_requests_total %d\n", requests.Load())
}

func counted(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		h.ServeHTTP(w, r)
	})
}

func main() {
	port := env("8080", "PORT", "APP_PORT")
	metricsPort := env(port, "METRICS_PORT", "APP_METRICS_PORT")
	metricsPath := env("/metrics", "METRICS_PATH", "APP_METRICS_PATH")

	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintln(w, "Hello, world!")
	})
	if metricsPort == port {
		mux.HandleFunc(metricsPath, metrics)
	} else {
		// The metrics on a port of their own (the charm's metrics-port).
		metricsMux := http.NewServeMux()
		metricsMux.HandleFunc(metricsPath, metrics)
		go func() {
			log.Printf("metrics on :%s%s", metricsPort, metricsPath)
			log.Fatal(http.ListenAndServe(":"+metricsPort, metricsMux))
		}()
	}
	log.Printf("listening on :%s", port)
	log.Fatal(http.ListenAndServe(":"+port, counted(mux)))
}
