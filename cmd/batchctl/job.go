package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/batchd/batchd/client"
)

// maxJobLine is the longest NDJSON line batchctl sends in a job: a batch far larger than any batchd takes.
const maxJobLine = 16 << 20

// cmdJob runs a job subcommand.
func cmdJob(ctx context.Context, args []string, server *string, e env) error {
	if len(args) == 0 {
		return &usageError{msg: "job needs a subcommand: submit, status, watch, results or cancel", usage: jobUsage}
	}
	switch args[0] {
	case "submit":
		return cmdJobSubmit(ctx, args[1:], server, e)
	case "status":
		return cmdJobStatus(ctx, args[1:], server, e)
	case "watch":
		return cmdJobWatch(ctx, args[1:], server, e)
	case "results":
		return cmdJobResults(ctx, args[1:], server, e)
	case "cancel":
		return cmdJobCancel(ctx, args[1:], server, e)
	case "-h", "-help", "--help", "help":
		return &usageError{usage: jobUsage}
	}
	return &usageError{msg: fmt.Sprintf("unknown job subcommand %q", args[0]), usage: jobUsage}
}

// cmdJobSubmit submits an NDJSON file, or the lines a CSV and a template make, as a job; it prints the job's id
// on stdout. With -print it prints the lines instead and submits nothing.
func cmdJobSubmit(ctx context.Context, args []string, server *string, e env) error {
	fs := flag.NewFlagSet("job submit", flag.ContinueOnError)
	fs.StringVar(server, "server", *server, "")
	key := fs.String("idempotency-key", "", "")
	csvFile := fs.String("csv", "", "")
	templateFile := fs.String("template", "", "")
	print := fs.Bool("print", false, "")
	pos, err := parseFlags(fs, args, jobSubmitUsage)
	if err != nil {
		return err
	}
	var lines func(w io.Writer) error // writes the job's NDJSON
	switch {
	case *csvFile != "" || *templateFile != "":
		if *csvFile == "" || *templateFile == "" || len(pos) != 0 {
			return &usageError{msg: "-csv FILE and -template FILE go together, without another FILE", usage: jobSubmitUsage}
		}
		if *csvFile == "-" && *templateFile == "-" {
			return &usageError{msg: "-csv and -template cannot both read standard input", usage: jobSubmitUsage}
		}
		tmpl, err := readInput(*templateFile, maxTemplate, e)
		if err != nil {
			return err
		}
		in, err := openInput(*csvFile, e)
		if err != nil {
			return err
		}
		defer in.Close()
		lines = func(w io.Writer) error {
			_, err := csvLines(in, tmpl, w)
			return err
		}
	case len(pos) == 1:
		in, err := openInput(pos[0], e)
		if err != nil {
			return err
		}
		defer in.Close()
		lines = func(w io.Writer) error { return copyNDJSON(w, in, pos[0]) }
	default:
		return &usageError{msg: "job submit takes one FILE of NDJSON (- reads standard input), or -csv FILE -template FILE", usage: jobSubmitUsage}
	}

	if *print {
		bw := bufio.NewWriter(e.stdout)
		if err := lines(bw); err != nil {
			return err
		}
		return bw.Flush()
	}
	c, err := newClient(*server)
	if err != nil {
		return err
	}
	var opts []client.RequestOption
	if *key != "" {
		opts = append(opts, client.IdempotencyKey(*key))
	}
	job, err := submitStream(ctx, c, lines, opts)
	if err != nil {
		var ce *client.Error
		if errors.As(err, &ce) && (ce.Status == 404 || ce.Status == 405) {
			return &hintError{err: err, hint: "does " + *server + " serve jobs (POST /v1/jobs)?"}
		}
		return err
	}
	fmt.Fprintln(e.stdout, job.ID)
	again := ""
	if job.Replayed {
		again = " (submitted before with this idempotency key)"
	}
	fmt.Fprintf(e.stderr, "batchctl: job %s%s %s: %d batches; follow it with: batchctl job watch %s\n",
		job.ID, again, job.Status, job.Batches, job.ID)
	return nil
}

// errUploadEnded closes the pipe of an upload that batchd answered before reading it whole.
var errUploadEnded = errors.New("batchd answered before the upload ended")

// submitStream submits the lines that write produces as they are produced, never holding them whole. When write
// fails (a bad row, an unreadable file), the upload is cut before its end, so batchd creates no job, and that
// error is the one returned.
func submitStream(ctx context.Context, c *client.Client, write func(io.Writer) error, opts []client.RequestOption) (*client.SubmittedJob, error) {
	pr, pw := io.Pipe()
	produced := make(chan error, 1)
	go func() {
		bw := bufio.NewWriterSize(pw, 64<<10)
		err := write(bw)
		if err == nil {
			err = bw.Flush()
		}
		pw.CloseWithError(err) // nil: a clean end of the body
		produced <- err
	}()
	// The pipe is handed over without its Close: net/http closes a request's body when the request ends, which
	// would end the writer with io.ErrClosedPipe, indistinguishable from a failure of its own, and hide batchd's
	// answer (a refusal sent before the upload's end: the 100th bad line, -job-max-body).
	job, err := c.SubmitJob(ctx, struct{ io.Reader }{pr}, opts...)
	pr.CloseWithError(errUploadEnded) // unblocks the writer when batchd answered before reading it all
	perr := <-produced
	switch {
	case perr == nil || errors.Is(perr, errUploadEnded):
		return job, err
	case job != nil:
		return nil, fmt.Errorf("%w (batchd accepted job %s before the upload ended: cancel it with batchctl job cancel %s)", perr, job.ID, job.ID)
	}
	return nil, perr
}

// copyNDJSON copies a job file to w line by line, checking that each line is one JSON value, so that a file
// that is not NDJSON is refused here with a hint instead of being uploaded. Each line of the file is one line of
// the job, so that batchd's line numbers (in a refusal, in the results) are the file's: a blank line is sent as an
// empty line, which batchd refuses naming it; blank lines at the end of the file are dropped.
func copyNDJSON(w io.Writer, r io.Reader, name string) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var line []byte
	blank := 0 // blank lines read and not yet sent: sent before the next line that is not blank
	for n := 1; ; n++ {
		line = line[:0]
		for {
			chunk, err := br.ReadSlice('\n')
			line = append(line, chunk...)
			if len(line) > maxJobLine {
				return fmt.Errorf("%s line %d is over %d bytes", displayName(name), n, maxJobLine)
			}
			if errors.Is(err, bufio.ErrBufferFull) {
				continue
			}
			if errors.Is(err, io.EOF) {
				if len(bytes.TrimSpace(line)) == 0 {
					return nil
				}
				line = append(line, '\n')
				break
			}
			if err != nil {
				return fmt.Errorf("cannot read %s: %w", displayName(name), err)
			}
			break
		}
		v := bytes.TrimSpace(line)
		if len(v) == 0 {
			blank++
			continue
		}
		if !jsontext.Value(v).IsValid() {
			return fmt.Errorf("%s line %d is not one JSON value: a job file holds one batch per line (NDJSON); "+
				"a batch written over several lines can be put on one with: jq -c . FILE", displayName(name), n)
		}
		for ; blank > 0; blank-- {
			if _, err := w.Write([]byte{'\n'}); err != nil {
				return err
			}
		}
		if _, err := w.Write(append(v, '\n')); err != nil {
			return err
		}
	}
}

// cmdJobStatus prints a job's status as batchd answered it, indented.
func cmdJobStatus(ctx context.Context, args []string, server *string, e env) error {
	c, id, err := jobCommand(args, server, "status", jobStatusUsage, nil)
	if err != nil {
		return err
	}
	s, err := c.Job(ctx, id)
	if err != nil {
		return unknownJob(err, *server)
	}
	return printJSON(e.stdout, s.Raw)
}

// cmdJobCancel cancels a job and prints its status as batchd answered it, indented.
func cmdJobCancel(ctx context.Context, args []string, server *string, e env) error {
	c, id, err := jobCommand(args, server, "cancel", jobCancelUsage, nil)
	if err != nil {
		return err
	}
	s, err := c.CancelJob(ctx, id)
	if err != nil {
		return unknownJob(err, *server)
	}
	return printJSON(e.stdout, s.Raw)
}

// cmdJobResults writes a job's results to stdout as NDJSON, one line per batch in line order.
func cmdJobResults(ctx context.Context, args []string, server *string, e env) error {
	var wait *bool
	c, id, err := jobCommand(args, server, "results", jobResultsUsage, func(fs *flag.FlagSet) {
		wait = fs.Bool("wait", false, "")
	})
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(e.stdout)
	for r, err := range c.JobResults(ctx, id, *wait) {
		if err != nil {
			_ = bw.Flush()
			return unknownJob(err, *server)
		}
		bw.Write(r.Raw)
		if err := bw.WriteByte('\n'); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// cmdJobWatch follows a job until it ends: a progress bar on a terminal, plain lines otherwise.
func cmdJobWatch(ctx context.Context, args []string, server *string, e env) error {
	var interval *time.Duration
	c, id, err := jobCommand(args, server, "watch", jobWatchUsage, func(fs *flag.FlagSet) {
		interval = fs.Duration("interval", time.Second, "")
	})
	if err != nil {
		return err
	}
	if *interval < 100*time.Millisecond {
		return &usageError{msg: "-interval must be at least 100ms", usage: jobWatchUsage}
	}
	var r renderer = &plainRenderer{w: e.stdout}
	if e.tty {
		r = newBarRenderer(e.stdout)
	}
	poll := func(ctx context.Context) (*client.JobStatus, error) { return c.Job(ctx, id) }
	s, err := watch(ctx, poll, r, *interval, time.Now)
	if err != nil {
		if ctx.Err() != nil {
			if e.tty {
				fmt.Fprintln(e.stdout) // off the bar's line
			}
			fmt.Fprintf(e.stderr, "batchctl: stopped watching job %s; it goes on. Resume with: batchctl job watch %s\n", id, id)
		}
		return unknownJob(err, *server)
	}
	switch {
	case s.Status == client.JobCancelled:
		return &failedError{msg: fmt.Sprintf("job %s was cancelled", id)}
	case s.Batches.Failed > 0:
		return &failedError{msg: fmt.Sprintf("job %s: %d of %d batches failed; read them with: batchctl job results %s",
			id, s.Batches.Failed, s.Batches.Total, id)}
	}
	return nil
}

// unknownJob adds to batchd's 404 for a job what to check.
func unknownJob(err error, server string) error {
	var ce *client.Error
	if errors.As(err, &ce) && ce.Status == http.StatusNotFound {
		return &hintError{err: err, hint: "check the job ID (job submit prints it) and -server (" + server +
			"): a job is kept -job-results-ttl after its last progress, and without -jobs-redis only by the batchd that took it"}
	}
	return err
}

// jobCommand parses a job subcommand that takes one ID, with the flags extra adds.
func jobCommand(args []string, server *string, name, usageText string, extra func(*flag.FlagSet)) (*client.Client, string, error) {
	fs := flag.NewFlagSet("job "+name, flag.ContinueOnError)
	fs.StringVar(server, "server", *server, "")
	if extra != nil {
		extra(fs)
	}
	pos, err := parseFlags(fs, args, usageText)
	if err != nil {
		return nil, "", err
	}
	if len(pos) != 1 || pos[0] == "" {
		return nil, "", &usageError{msg: "job " + name + " takes one job ID (as job submit printed it)", usage: usageText}
	}
	c, err := newClient(*server)
	return c, pos[0], err
}

// printJSON writes a JSON answer of batchd indented, its members and values as batchd wrote them.
func printJSON(w io.Writer, raw json.RawMessage) error {
	var out bytes.Buffer
	if err := json.Indent(&out, raw, "", "  "); err != nil {
		return err
	}
	out.WriteByte('\n')
	_, err := w.Write(out.Bytes())
	return err
}
