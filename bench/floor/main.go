// Command floor is the least a Go proxy of a batch can do, the yardstick for batchd's CPU per batch: it reads a
// batch of independent steps with encoding/json, sends each step's payload as a POST with one shared net/http
// client, one goroutine per step, and answers {"responses":[{"key","status","response"}]} in request order.
//
// It has none of what makes batchd batchd: no placeholders or dependencies, no validation, no limits or budgets,
// no metrics, no logs, no timeouts. It exists only to be measured by the load tool, on the scenarios of independent
// steps, in batchd's place or beside it:
//
//	go build -o bin/floor ./bench/floor
//	bin/batchload -batchd bin/batchd -compare bin/floor -scenario a50,d10
//
// It takes the flags the load tool gives batchd (-addr, -upstream, -max-parallel) and serves GET /readyz.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

type step struct {
	Key     string          `json:"key"`
	Path    string          `json:"path"`
	Payload json.RawMessage `json:"payload"`
}

type result struct {
	Key      string          `json:"key"`
	Status   int             `json:"status"`
	Response json.RawMessage `json:"response"`
}

func main() {
	fs := flag.NewFlagSet("floor", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:8080", "listen address")
	upstream := fs.String("upstream", "", "upstream base URL, with a trailing slash")
	maxParallel := fs.Int("max-parallel", 50, "idle connections kept to the upstream")
	_ = fs.Parse(os.Args[1:])
	if *upstream == "" {
		fmt.Fprintln(os.Stderr, "floor: -upstream is required")
		os.Exit(2)
	}
	base := strings.TrimSuffix(*upstream, "/") + "/"
	client := &http.Client{Transport: &http.Transport{
		MaxIdleConns:        *maxParallel * 4,
		MaxIdleConnsPerHost: *maxParallel * 4,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, `{"ok":true}`) })
	mux.HandleFunc("POST /v1/batch", func(w http.ResponseWriter, r *http.Request) {
		var batch struct {
			Requests []step `json:"requests"`
		}
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&batch); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		out := make([]result, len(batch.Requests))
		var wg sync.WaitGroup
		for i, s := range batch.Requests {
			wg.Go(func() { out[i] = call(r, client, base, s) })
		}
		wg.Wait()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(struct {
			Responses []result `json:"responses"`
		}{out})
	})
	srv := &http.Server{Addr: *addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintln(os.Stderr, srv.ListenAndServe())
	os.Exit(1)
}

// call sends one step and returns its result; a failure is a 502 with the error as a JSON string.
func call(r *http.Request, client *http.Client, base string, s step) result {
	res := result{Key: s.Key, Status: http.StatusBadGateway}
	req, err := http.NewRequestWithContext(r.Context(), http.MethodPost, base+s.Path, bytes.NewReader(s.Payload))
	if err == nil {
		req.Header.Set("Content-Type", "application/json")
		var resp *http.Response
		if resp, err = client.Do(req); err == nil {
			var body []byte
			body, err = io.ReadAll(io.LimitReader(resp.Body, 16<<20))
			resp.Body.Close()
			if err == nil {
				res.Status, res.Response = resp.StatusCode, body
				return res
			}
		}
	}
	res.Response, _ = json.Marshal(err.Error())
	return res
}
