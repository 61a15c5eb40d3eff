// The jobs page: a job's progress, polled from GET /v1/jobs/{id}, and the lines of GET /v1/jobs/{id}/results whose
// batch had a failure.
import {api, call, el, errorResult, isObject, outcome} from './common.js';

const $ = (id) => document.getElementById(id);
const page = {
  main: $('jobs'), form: $('job-form'), id: $('job-id'), status: $('job-status'), job: $('job'),
  state: $('job-state'), progress: $('job-progress'), batches: $('job-batches'), failed: $('job-failed'),
  steps: $('job-steps'), rate: $('job-rate'), created: $('job-created'), started: $('job-started'),
  finished: $('job-finished'), failures: $('failures'), failuresSummary: $('failures-summary'),
  failuresRead: $('failures-read'), failuresList: $('failures-list'),
};

const pollEvery = 1000; // ms between two reads of a running job
const rateWindow = 10; // polls the rate is measured over
const maxListed = 100; // failed lines listed; the rest are counted
const maxStepsListed = 5; // failed steps listed per line

// watching is the job being followed: its id, the poll timer, the results reader, and recent progress samples.
let watching = null;

function watch(id) {
  stop();
  watching = {id, timer: 0, reader: null, samples: []};
  page.main.dataset.seq = String(Number(page.main.dataset.seq) + 1);
  page.main.dataset.state = 'watching';
  page.job.hidden = true;
  page.failures.hidden = true;
  page.failuresList.replaceChildren();
  page.status.textContent = `Reading job ${id}…`;
  const url = new URL(location.href);
  url.searchParams.set('id', id);
  history.replaceState(null, '', url);
  poll(watching);
}

function stop() {
  if (!watching) return;
  clearTimeout(watching.timer);
  watching.reader?.abort();
  watching = null;
}

const jobURL = (id, rest = '') => api(`v1/jobs/${encodeURIComponent(id)}${rest}`);

async function poll(w) {
  let answer;
  try {
    answer = await call(jobURL(w.id));
  } catch (err) {
    return w === watching && fail(err.message);
  }
  if (w !== watching) return; // another job is watched now
  if (answer.status !== 200 || !isObject(answer.body)) {
    const er = errorResult(answer.body);
    const why = er ? er.description : answer.text.slice(0, 500);
    return fail(answer.status === 404
      ? `No job ${w.id} here (404: ${why}). Is the id right, and does this batchd run jobs?`
      : `Reading job ${w.id} failed: HTTP ${answer.status}: ${why}`);
  }
  const job = answer.body;
  render(w, job);
  if (job.status === 'done' || job.status === 'cancelled') {
    page.main.dataset.state = 'ended';
    page.status.textContent = `Job ${w.id} ${job.status}. Reading its results…`;
    await readFailures(w);
    return;
  }
  page.status.textContent = `Job ${w.id} ${job.status}; read again every ${pollEvery / 1000} s.`;
  w.timer = setTimeout(() => poll(w), pollEvery);
}

function fail(message) {
  page.main.dataset.state = 'error';
  page.status.textContent = message;
}

const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : 0);

function render(w, job) {
  const b = isObject(job.batches) ? job.batches : {};
  const s = isObject(job.steps) ? job.steps : {};
  const total = num(b.total), done = num(b.done), failed = num(b.failed);
  const now = performance.now();
  w.samples.push({t: now, done});
  if (w.samples.length > rateWindow) w.samples.shift();

  page.state.textContent = String(job.status ?? 'unknown');
  page.state.dataset.status = String(job.status ?? '');
  page.progress.max = Math.max(total, 1);
  page.progress.value = done;
  const pct = total > 0 ? Math.floor((done / total) * 100) : 0;
  page.progress.setAttribute('aria-valuetext', `${done} of ${total} batches done (${pct} %)`);
  page.batches.textContent = `${done} / ${total} done (${pct} %)`;
  page.batches.dataset.done = String(done);
  page.batches.dataset.total = String(total);
  page.failed.textContent = failed ? `✗ ${failed}` : '0';
  page.failed.dataset.failed = String(failed);
  page.steps.textContent = `${num(s.done)} done, ${num(s.failed)} failed`;
  page.rate.textContent = rate(w, job, done, total);
  page.created.textContent = when(job.created);
  page.started.textContent = when(job.started);
  page.finished.textContent = when(job.finished);
  page.job.hidden = false;
  if (page.failures.hidden) {
    page.failuresSummary.textContent = 'The results are read when the job ends; the button reads those so far.';
    page.failures.hidden = false;
  }
}

// rate is batches per second: over the last polls while the job runs, over its whole run once it ended (when its
// started and finished times are timestamps), with the time left at that pace.
function rate(w, job, done, total) {
  if (job.status === 'done' || job.status === 'cancelled') {
    const secs = (Date.parse(job.finished) - Date.parse(job.started)) / 1000;
    return Number.isFinite(secs) && secs > 0 ? `${(done / secs).toFixed(1)} batches/s over the run` : '–';
  }
  const first = w.samples[0], last = w.samples[w.samples.length - 1];
  if (!first || last.t - first.t < 1) return 'measuring…';
  const perSec = ((last.done - first.done) * 1000) / (last.t - first.t);
  if (perSec <= 0) return '0 batches/s';
  const left = Math.ceil((total - done) / perSec);
  return `${perSec.toFixed(1)} batches/s; about ${left} s left`;
}

function when(v) {
  if (v === undefined || v === null || v === '') return '–';
  const t = typeof v === 'string' ? Date.parse(v) : NaN;
  return Number.isFinite(t) ? `${new Date(t).toLocaleString()} (${v})` : String(v);
}

// readFailures reads the job's results as a stream, one {"line", "answer"} per line, and lists the lines whose
// answer has a failed step or is itself an ErrorResult: the first maxListed of them, the others counted. Only those
// are kept, so a job of a million lines costs the page what it shows.
async function readFailures(w) {
  w.reader?.abort();
  const reader = new AbortController();
  w.reader = reader;
  page.failuresList.replaceChildren();
  page.failures.hidden = false;
  page.failuresSummary.textContent = 'Reading results…';
  let lines = 0, failedLines = 0, unreadable = 0;
  const take = (text) => {
    if (text.trim() === '') return;
    lines++;
    let rec;
    try {
      rec = JSON.parse(text);
    } catch {
      unreadable++;
      return;
    }
    const problems = lineFailures(rec?.answer);
    if (problems.length === 0) return;
    failedLines++;
    if (failedLines <= maxListed) page.failuresList.append(failureRow(rec.line, problems));
  };
  try {
    const resp = await fetch(jobURL(w.id, '/results'), {signal: reader.signal});
    if (!resp.ok || !resp.body) {
      const text = await resp.text();
      const er = errorResult(safeJSON(text));
      throw new Error(`HTTP ${resp.status}: ${er ? er.description : text.slice(0, 500)}`);
    }
    const decoder = new TextDecoderStream();
    const stream = resp.body.pipeThrough(decoder).getReader();
    let rest = '';
    for (;;) {
      const {value, done} = await stream.read();
      if (done) break;
      rest += value;
      let nl;
      while ((nl = rest.indexOf('\n')) >= 0) {
        take(rest.slice(0, nl));
        rest = rest.slice(nl + 1);
      }
    }
    take(rest);
  } catch (err) {
    if (w !== watching || reader.signal.aborted) return;
    page.failuresSummary.textContent = `Reading the results failed: ${err.message}`;
    page.main.dataset.state = 'error';
    return;
  }
  if (w !== watching) return;
  const more = failedLines > maxListed ? ` (the first ${maxListed} listed)` : '';
  const bad = unreadable ? `; ${unreadable} result lines were not JSON` : '';
  page.failuresSummary.textContent = `${lines} lines read: ${failedLines} had a failure${more}${bad}.`;
  page.failuresSummary.dataset.lines = String(lines);
  page.failuresSummary.dataset.failedLines = String(failedLines);
  page.main.dataset.state = 'read';
  page.status.textContent = `Job ${w.id}: results read.`;
}

function safeJSON(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

// lineFailures lists what failed in one line's answer: the batch's ErrorResult, or its failed steps as
// {key, status, description}. A step not executed because of another is not listed: its cause is.
function lineFailures(answer) {
  const er = errorResult(answer);
  if (er) return [{key: '', status: Math.floor(er.code / 10), description: er.description}];
  const responses = Array.isArray(answer) ? answer : isObject(answer) ? answer.responses : null;
  if (!Array.isArray(responses)) return [{key: '', status: 0, description: 'no answer for this line'}];
  return responses.filter((r) => isObject(r) && outcome(r) === 'failed').map((r) => ({
    key: String(r.key), status: r.status, description: errorResult(r.response)?.description ?? '',
  }));
}

function failureRow(line, problems) {
  const shown = problems.slice(0, maxStepsListed).map((p) => el('li', {'data-key': p.key},
    p.key ? el('code', {}, p.key) : 'the batch', ` ✗ ${p.status}`, p.description ? `: ${p.description}` : ''));
  if (problems.length > maxStepsListed) shown.push(el('li', {}, `and ${problems.length - maxStepsListed} more`));
  return el('tr', {class: 'failure', 'data-line': line},
    el('td', {}, String(line)), el('td', {}, el('ul', {class: 'failed-steps'}, ...shown)));
}

page.form.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const id = page.id.value.trim();
  if (id) watch(id);
});
page.failuresRead.addEventListener('click', () => watching && readFailures(watching));

const initial = new URL(location.href).searchParams.get('id');
if (initial) {
  page.id.value = initial;
  watch(initial);
}
