// {{name}}: a hello-world Go application (standard library only).
package main

import (
	"fmt"
	"log"
	"net/http"
	"os"
)

// port returns the port to listen on: APP_PORT (12-factor charms v1),
// then PORT (v2), then 8080.
func port() string {
	for _, name := range []string{"APP_PORT", "PORT"} {
		if p := os.Getenv(name); p != "" {
			return p
		}
	}
	return "8080"
}

func main() {
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintln(w, "Hello, world!")
	})
	addr := ":" + port()
	log.Printf("listening on %s", addr)
	log.Fatal(http.ListenAndServe(addr, nil))
}
