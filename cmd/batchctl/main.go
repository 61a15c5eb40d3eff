// Command batchctl runs, plans and follows batches and jobs on a batchd server.
//
// Exit status: 0 success (every step succeeded; a job done with no failed batch); 1 some step or batch failed,
// or a job was cancelled; 2 refused by batchd or a usage error; 3 batchd could not be reached or its answer was cut
// short; 130 interrupted (Ctrl-C).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"golang.org/x/term"

	"github.com/batchd/batchd/client"
)

// Exit statuses.
const (
	exitOK          = 0
	exitFailed      = 1   // a step, a batch of a job failed, or a job was cancelled
	exitRefused     = 2   // batchd refused the request, or the command line is wrong
	exitUnreachable = 3   // no complete answer: batchd unreachable, the connection or the answer cut short
	exitInterrupted = 130 // Ctrl-C
)

const defaultServer = "http://localhost:8080"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], env{
		getenv: os.Getenv,
		stdin:  os.Stdin,
		stdout: os.Stdout,
		stderr: os.Stderr,
		tty:    term.IsTerminal(int(os.Stdout.Fd())),
	})
	stop()
	os.Exit(code)
}

// env is what a run of batchctl reads and writes besides its arguments.
type env struct {
	getenv func(string) string
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	tty    bool // stdout is a terminal: job watch draws a progress bar
}

// usageError is a mistake on the command line: exit status 2, with the usage of the command.
type usageError struct {
	msg   string
	usage string
}

func (e *usageError) Error() string { return e.msg }

// run runs batchctl with args (without the program name) and returns its exit status.
func run(ctx context.Context, args []string, e env) int {
	fs := flag.NewFlagSet("batchctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	server := serverFlag(fs, e)
	if err := fs.Parse(args); err != nil {
		return usage(e, err, mainUsage)
	}
	args = fs.Args()
	if len(args) == 0 {
		return usage(e, errors.New("a command is required"), mainUsage)
	}
	var err error
	switch args[0] {
	case "run":
		err = cmdRun(ctx, args[1:], server, e)
	case "plan":
		err = cmdPlan(ctx, args[1:], server, e)
	case "job":
		err = cmdJob(ctx, args[1:], server, e)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(e.stdout, mainUsage)
		return exitOK
	default:
		return usage(e, fmt.Errorf("unknown command %q", args[0]), mainUsage)
	}
	return exitStatus(ctx, err, *server, e)
}

// serverFlag adds -server to fs, defaulting to $BATCHD_SERVER, else http://localhost:8080. Every command takes
// it, so that it may stand before or after the command's name.
func serverFlag(fs *flag.FlagSet, e env) *string {
	def := e.getenv("BATCHD_SERVER")
	if def == "" {
		def = defaultServer
	}
	return fs.String("server", def, "batchd's base URL (env BATCHD_SERVER)")
}

// parseFlags parses a command's flags, which may stand before, between or after its arguments; after "--"
// everything is an argument. It returns the arguments.
func parseFlags(fs *flag.FlagSet, args []string, usageText string) ([]string, error) {
	fs.SetOutput(io.Discard)
	var rest []string
	for i, a := range args {
		if a == "--" {
			args, rest = args[:i], args[i+1:]
			break
		}
	}
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, &usageError{usage: usageText}
			}
			return nil, &usageError{msg: err.Error(), usage: usageText}
		}
		if fs.NArg() == 0 {
			return append(pos, rest...), nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// hintError is an error with a line that says what may fix it.
type hintError struct {
	err  error
	hint string
}

func (e *hintError) Error() string { return e.err.Error() }
func (e *hintError) Unwrap() error { return e.err }

// exitStatus reports err on stderr, with its hint if it has one, and returns the exit status it means.
func exitStatus(ctx context.Context, err error, server string, e env) int {
	code := classify(ctx, err, server, e)
	var h *hintError
	if errors.As(err, &h) {
		fmt.Fprintln(e.stderr, "  "+h.hint)
	}
	return code
}

// classify reports err on stderr and returns the exit status it means.
func classify(ctx context.Context, err error, server string, e env) int {
	var ue *usageError
	var refused *client.Error
	var failed *failedError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue):
		return usage(e, ue, ue.usage)
	case errors.As(err, &failed):
		fmt.Fprintln(e.stderr, "batchctl:", failed.msg)
		return exitFailed
	case ctx.Err() != nil:
		fmt.Fprintln(e.stderr, "batchctl: interrupted")
		return exitInterrupted
	case errors.As(err, &refused):
		printRefusal(e.stderr, refused)
		return exitRefused
	case errors.Is(err, client.ErrIncomplete):
		fmt.Fprintln(e.stderr, "batchctl:", err)
		return exitUnreachable
	}
	var ue2 *url.Error // what net/http answers when no answer came: refused, reset, DNS, TLS
	if errors.As(err, &ue2) {
		fmt.Fprintf(e.stderr, "batchctl: cannot reach batchd at %s: %v\n"+
			"  start it (make run), or point -server or BATCHD_SERVER at it\n", server, err)
		return exitUnreachable
	}
	fmt.Fprintln(e.stderr, "batchctl:", err)
	return exitRefused
}

// failedError is a command that ran and reports a failure (exit status 1): a step or batch failed, a job was
// cancelled.
type failedError struct{ msg string }

func (e *failedError) Error() string { return e.msg }

// printRefusal writes what batchd refused and every problem it listed (but one that only repeats the
// description, as batchd's single-problem refusals do: 413, 422, …).
func printRefusal(w io.Writer, e *client.Error) {
	fmt.Fprintf(w, "batchctl: refused: %v\n", e)
	listed := 0
	for _, p := range e.Details {
		if p.Line == 0 && p.Key == "" && p.Problem == e.Description {
			continue
		}
		listed++
		var where []string
		if p.Line > 0 {
			where = append(where, fmt.Sprintf("line %d", p.Line))
		}
		if p.Key != "" {
			where = append(where, "step "+p.Key)
		}
		if len(where) == 0 {
			where = append(where, "batch")
		}
		reason := ""
		if p.Reason != "" {
			reason = " (" + p.Reason + ")"
		}
		fmt.Fprintf(w, "  %s%s: %s\n", strings.Join(where, ", "), reason, p.Problem)
	}
	switch {
	case e.Code == 4000 || listed > 0:
		fmt.Fprintln(w, "  nothing was run; fix the problems above and try again")
	case e.RetryAfter > 0:
		fmt.Fprintf(w, "  nothing was run; retry after %s\n", e.RetryAfter)
	}
}

// usage reports a command-line mistake with the command's usage, exit status 2; -h alone prints the usage to
// stdout, exit status 0.
func usage(e env, err error, text string) int {
	if errors.Is(err, flag.ErrHelp) || err != nil && err.Error() == "" {
		fmt.Fprint(e.stdout, text)
		return exitOK
	}
	fmt.Fprintf(e.stderr, "batchctl: %v\n\n%s", err, text)
	return exitRefused
}

// newClient builds the client of the batchd at server.
func newClient(server string) (*client.Client, error) {
	c, err := client.New(server, client.Config{})
	if err != nil {
		return nil, &usageError{msg: fmt.Sprintf("-server %q: %v", server, err), usage: mainUsage}
	}
	return c, nil
}

// openInput opens a file argument; "-" is stdin.
func openInput(name string, e env) (io.ReadCloser, error) {
	if name == "-" {
		return io.NopCloser(e.stdin), nil
	}
	f, err := os.Open(name)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("cannot read %s: %v", name, err)
	}
	return f, nil
}

// readInput reads a whole file argument of at most limit bytes; "-" is stdin.
func readInput(name string, limit int64, e env) ([]byte, error) {
	r, err := openInput(name, e)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", displayName(name), err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is over %d bytes", displayName(name), limit)
	}
	return b, nil
}

func displayName(name string) string {
	if name == "-" {
		return "standard input"
	}
	return name
}
