package main

const mainUsage = `batchctl runs, plans and follows batches and jobs on a batchd server.

Usage:
  batchctl [-server URL] COMMAND [flags] [ARGS]

Commands:
  run FILE              run a batch and print its answer
  plan FILE             print how batchd would run a batch, level by level (a dry run: nothing is sent)
  job submit FILE       submit a job: one batch per line (NDJSON); prints the job's id
  job submit -csv FILE -template FILE
                        submit a job of one batch per CSV row, filled into a template
  job status ID         print a job's status as JSON
  job watch ID          follow a job: a progress bar on a terminal, plain lines otherwise
  job results ID        print a job's results as NDJSON, one line per batch
  job cancel ID         cancel a job: no further batch of it starts

FILE "-" reads standard input. "batchctl COMMAND -h" tells more about a command.

Flags:
  -server URL           batchd's base URL (env BATCHD_SERVER; default http://localhost:8080)

Exit status:
  0  every step succeeded (run), the plan was printed, a job ended with no failed batch (watch)
  1  some step failed (run); some batch failed, or the job was cancelled (watch)
  2  batchd refused the request (the message lists each problem), or the command line is wrong
  3  batchd could not be reached, or its answer was cut short
  130 interrupted (Ctrl-C)

Examples:
  batchctl run batch.json
  batchctl -server http://batchd:8080 plan batch.json
  echo '[{"path":"Demo/Echo","body":{"hi":1}}]' | batchctl run -
  batchctl job submit -csv producers.csv -template producer.json
  batchctl job watch 0f3c2a
  batchctl job results -wait 0f3c2a > results.ndjson
`

const runUsage = `Usage: batchctl run [-server URL] [-idempotency-key KEY] FILE

Runs the batch in FILE (JSON, in any form batchd accepts; - reads standard input) and prints its answer as
indented JSON: {"responses": [{"key", "status", "response"}, …]} in request order, whatever form the batch was
written in. A summary ("4 steps, 1 failed") goes to standard error.

Flags:
  -idempotency-key KEY  send Idempotency-Key: run again with the same key and file, batchd replays the first
                        answer instead of running the batch twice
  -server URL           batchd's base URL (env BATCHD_SERVER; default http://localhost:8080)

Exit status: 0 every step succeeded; 1 some step failed; 2 refused (each problem is listed) or usage;
3 batchd unreachable or the answer cut short.

Examples:
  batchctl run batch.json
  batchctl run -idempotency-key import-2026-12-02 batch.json
  batchctl run - < batch.json | jq '.responses[] | select(.status >= 400)'
`

const planUsage = `Usage: batchctl plan [-server URL] [-json] FILE

Asks batchd how it would run the batch in FILE (a dry run: nothing is sent to any API) and prints it level by
level: level 0 holds the steps that wait for nothing, level n the steps whose deepest dependency is on level n-1
(steps of one level may run at once), each with the steps it waits for, then a longest dependency chain:

  level 0:  A  POST  Producer/Add
            B  POST  Demo/Echo
  level 1:  C  POST  Producer/Get  ← A, B
  critical path: A → C (2 levels, 3 steps)

Flags:
  -json        print the plan as batchd answers it, as JSON
  -server URL  batchd's base URL (env BATCHD_SERVER; default http://localhost:8080)

Exit status: 0 planned; 2 refused (each problem is listed) or usage; 3 batchd unreachable.

Example:
  batchctl plan batch.json
`

const jobUsage = `Usage: batchctl job SUBCOMMAND [flags] ARGS

Subcommands:
  submit FILE                          submit one batch per line of FILE (NDJSON); prints the job's id
  submit -csv FILE -template FILE      submit one batch per CSV row, filled into a template
  status ID                            print a job's status as JSON
  watch ID                             follow a job until it ends
  results ID                           print a job's results as NDJSON
  cancel ID                            cancel a job

"batchctl job SUBCOMMAND -h" tells more.
`

const jobSubmitUsage = `Usage:
  batchctl job submit [-server URL] [-idempotency-key KEY] FILE
  batchctl job submit [-server URL] [-idempotency-key KEY] [-print] -csv FILE -template FILE

Submits a job and prints its id on standard output. FILE holds one batch per line (NDJSON, any batch form); each
line is checked to be one JSON value before it is sent, and the file is streamed, never held whole. batchd checks
every batch before anything runs and refuses the job naming the bad lines by their number in FILE (a blank line
inside FILE is a bad line; blank lines at its end are ignored).

With -csv and -template, each CSV row becomes one batch: the template is a batch as JSON (over as many lines as
you like) in which ${row.COLUMN} stands for that row's value of COLUMN, named by the CSV's header row:

  {"requests": [{"key": "add", "path": "Producer/Add", "payload": {"name": "${row.name}"}},
                {"key": "get", "path": "Producer/Get", "payload": {"ids": ["${add.result.new_id}"]}}]}

  - a value is always a JSON string ("42" stays "42"), JSON-escaped; inside a longer string it is inserted as
    text ("copy of ${row.name}"); its "${" are written "$${", so batchd never reads data as a placeholder
  - in a step's "path" a value is percent-escaped as one segment ("a/b" → "a%2Fb"), after "?" as a query value
  - ${row.COLUMN} naming no column of the header stops before anything is sent, listing the columns
  - other ${…} are batchd's placeholders and "$${" its escape for a literal "${": both are left as they are
  - ${row.…} in an object member name or inside a batchd placeholder is refused
  - an empty cell is ""; a row with more or fewer cells than the header stops the upload, naming the row, and
    batchd then creates no job

Flags:
  -csv FILE             the CSV (a header row, then one row per batch; - reads standard input)
  -template FILE        the batch template (JSON; - reads standard input)
  -print                print the NDJSON lines instead of submitting them
  -idempotency-key KEY  send Idempotency-Key: submitting again with the same key returns the same job
  -server URL           batchd's base URL (env BATCHD_SERVER; default http://localhost:8080)

Examples:
  batchctl job submit batches.ndjson
  ID=$(batchctl job submit -csv producers.csv -template producer.json) && batchctl job watch "$ID"
  batchctl job submit -print -csv producers.csv -template producer.json | head -3
`

const jobStatusUsage = `Usage: batchctl job status [-server URL] ID

Prints the job's status as batchd answers it: status (queued, running, done, cancelled), batches (total, done,
failed, skipped), steps (done, failed), results (bytes, max_bytes, not_stored), created, started, finished.
`

const jobWatchUsage = `Usage: batchctl job watch [-server URL] [-interval 1s] ID

Follows a job until it ends. On a terminal it draws a progress bar with the batches done, failed, the rate and
the time left; otherwise (a pipe, a log) it writes a plain line whenever the counts change:

  job 0f3c2a running: 120/1000 batches (12%), 3 failed, 24.0 batches/s, ETA 37s
  job 0f3c2a done: 1000/1000 batches, 3 failed; 10000 steps, 4 failed; in 41s

The rate is measured over the last 30 s of polls. Ctrl-C stops watching, not the job: run watch again to resume.

Flags:
  -interval D  how often to poll (at least 100ms; default 1s)
  -server URL  batchd's base URL (env BATCHD_SERVER; default http://localhost:8080)

Exit status: 0 the job is done and no batch failed; 1 some batch failed, or the job was cancelled; 2 unknown job;
3 batchd unreachable; 130 interrupted.
`

const jobResultsUsage = `Usage: batchctl job results [-server URL] [-wait] ID

Writes the job's results to standard output as NDJSON, one line per batch in line order:
{"line": n, "answer": <the batch's answer>}.

Flags:
  -wait        stream results until the job ends, instead of the results there are now
  -server URL  batchd's base URL (env BATCHD_SERVER; default http://localhost:8080)

Example:
  batchctl job results -wait 0f3c2a | jq -c 'select([(.answer | .responses? // .)[] | .status >= 400] | any) | .line'
`

const jobCancelUsage = `Usage: batchctl job cancel [-server URL] ID

Cancels the job: no further batch of it starts; running batches finish. Prints the job's status.
`
