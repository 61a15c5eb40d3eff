package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/batchd/batchd/client"
)

// maxBatchFile is the largest batch file read; batchd's own -max-body (1 MiB by default) is what bounds a batch.
const maxBatchFile = 64 << 20

// batchArg reads the one FILE of run and plan (a batch as JSON; - reads standard input), checks that it is JSON, and
// makes the client of server.
func batchArg(pos []string, cmd, usage, server string, e env) (*client.Client, []byte, error) {
	if len(pos) != 1 {
		return nil, nil, &usageError{msg: cmd + " takes one FILE (a batch as JSON; - reads standard input)", usage: usage}
	}
	c, err := newClient(server)
	if err != nil {
		return nil, nil, err
	}
	body, err := readInput(pos[0], maxBatchFile, e)
	if err != nil {
		return nil, nil, err
	}
	if err := checkJSON(pos[0], body); err != nil {
		return nil, nil, err
	}
	return c, body, nil
}

// cmdRun runs a batch and prints its answer: exit 0 when every step succeeded, 1 when some step failed.
func cmdRun(ctx context.Context, args []string, server *string, e env) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.StringVar(server, "server", *server, "batchd's base URL")
	key := fs.String("idempotency-key", "", "")
	pos, err := parseFlags(fs, args, runUsage)
	if err != nil {
		return err
	}
	c, body, err := batchArg(pos, "run", runUsage, *server, e)
	if err != nil {
		return err
	}
	var opts []client.RequestOption
	if *key != "" {
		opts = append(opts, client.IdempotencyKey(*key))
	}
	ans, err := c.RunJSON(ctx, body, opts...)
	if err != nil {
		return err
	}
	if ans.Plan != nil { // the batch asked for a dry run itself
		return printPlan(e.stdout, ans.Plan)
	}
	out, err := json.Marshal(ans)
	if err != nil {
		return err
	}
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, out, "", "  "); err != nil {
		return err
	}
	pretty.WriteByte('\n')
	if _, err := e.stdout.Write(pretty.Bytes()); err != nil {
		return err
	}
	summary := fmt.Sprintf("%s, %d failed", plural(len(ans.Results), "step"), ans.Failed)
	if ans.Failed > 0 {
		return &failedError{msg: summary}
	}
	fmt.Fprintln(e.stderr, "batchctl:", summary)
	return nil
}

// cmdPlan prints a batch's dry-run plan level by level.
func cmdPlan(ctx context.Context, args []string, server *string, e env) error {
	fs := flag.NewFlagSet("plan", flag.ContinueOnError)
	fs.StringVar(server, "server", *server, "batchd's base URL")
	asJSON := fs.Bool("json", false, "")
	pos, err := parseFlags(fs, args, planUsage)
	if err != nil {
		return err
	}
	c, body, err := batchArg(pos, "plan", planUsage, *server, e)
	if err != nil {
		return err
	}
	p, err := c.PlanJSON(ctx, body)
	if err != nil {
		return err
	}
	if *asJSON {
		out, err := json.MarshalIndent(struct {
			Plan *client.Plan `json:"plan"`
		}{p}, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(e.stdout, "%s\n", out)
		return err
	}
	return printPlan(e.stdout, p)
}

// printPlan writes a plan level by level, each step with its method, path and the steps it waits for, then the
// critical path:
//
//	level 0:  A  POST  Producer/Add
//	          B  POST  Demo/Echo
//	level 1:  C  POST  Producer/Get  ← A, B
//	critical path: A → C (2 levels, 3 steps)
func printPlan(w io.Writer, p *client.Plan) error {
	var buf bytes.Buffer
	tw := tabwriter.NewWriter(&buf, 0, 0, 2, ' ', 0)
	for level, steps := range p.ByLevel() {
		for i, s := range steps {
			label := ""
			if i == 0 {
				label = fmt.Sprintf("level %d:", level)
			}
			deps := ""
			if len(s.DependsOn) > 0 {
				deps = "← " + strings.Join(s.DependsOn, ", ")
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", label, s.Key, s.Method, s.Path, deps)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for line := range strings.Lines(buf.String()) {
		fmt.Fprintln(w, strings.TrimRight(line, " \n"))
	}
	_, err := fmt.Fprintf(w, "critical path: %s (%s, %s)\n", strings.Join(p.CriticalPath, " → "),
		plural(p.Levels, "level"), plural(len(p.Steps), "step"))
	return err
}

// checkJSON refuses a batch file that is not JSON before it is sent, saying where it is broken.
func checkJSON(name string, body []byte) error {
	var v any
	err := json.Unmarshal(body, &v)
	if err == nil {
		return nil
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		line := 1 + bytes.Count(body[:min(int(se.Offset), len(body))], []byte("\n"))
		return fmt.Errorf("%s is not JSON: line %d: %v", displayName(name), line, se)
	}
	return fmt.Errorf("%s is not JSON: %v", displayName(name), err)
}

// plural is "1 step", "2 steps".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
