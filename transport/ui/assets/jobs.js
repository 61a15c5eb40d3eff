// The jobs page: a job's progress, polled from GET /v1/jobs/{id}, and the lines of GET /v1/jobs/{id}/results whose
// batch had a failure.
import {api, call, callOutcome, el, errorResult, isObject, outcome} from './common.js';

const $ = (id) => document.getElementById(id);
const page = {
  main: $('jobs'), form: $('job-form'), id: $('job-id'), status: $('job-status'), job: $('job'),
  state: $('job-state'), progress: $('job-progress'), batches: $('job-batches'), failed: $('job-failed'),
  skipped: $('job-skipped'), steps: $('job-steps'), results: $('job-results'), rate: $('job-rate'),
  created: $('job-created'), started: $('job-started'),
  finished: $('job-finished'), failures: $('failures'), failuresSummary: $('failures-summary'),
  failuresRead: $('failures-read'), failuresList: $('failures-list'),
};

const pollEvery = 1000; // ms between two reads of a running job
const rateWindow = 10; // polls the rate is measured over
const maxListed = 100; // failed lines listed; the rest are counted
const maxStepsListed = 5; // failed steps listed per line

// watching is the job being followed: its id, the poll timer, the results reader, recent progress samples, and
// once it ended its last state.
let watching = null;

function watch(id) {
  stop();
  watching = {id, timer: 0, reader: null, samples: [], ended: null};
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
      ? `No job ${w.id} (HTTP 404: ${why}). Check the id: it is the one POST /v1/jobs answered.`
      : `Reading job ${w.id} failed: HTTP ${answer.status}: ${why}`);
  }
  const job = answer.body;
  const c = render(w, job);
  if (c.ended) {
    w.ended = job;
    page.main.dataset.state = 'ended';
    page.status.textContent = `Job ${w.id} ${job.status}. Reading its results…`;
    await readFailures(w);
    return;
  }
  page.status.textContent = job.status === 'cancelled'
    ? `Job ${w.id} cancelled: no further batch starts; ${c.total - c.done - c.skipped} batches still to finish or ` +
      `be skipped; read again every ${pollEvery / 1000} s.`
    : `Job ${w.id} ${job.status}; read again every ${pollEvery / 1000} s.`;
  w.timer = setTimeout(() => poll(w), pollEvery);
}

function fail(message) {
  page.main.dataset.state = 'error';
  page.status.textContent = message;
}

const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : 0);

// render shows a job's state and returns its batch counts, with ended: nothing of the job is left to run or running
// (done; or cancelled, every batch either finished or skipped: batches running at the cancel still finish).
function render(w, job) {
  const b = isObject(job.batches) ? job.batches : {};
  const s = isObject(job.steps) ? job.steps : {};
  const r = isObject(job.results) ? job.results : {};
  const total = num(b.total), done = num(b.done), failed = num(b.failed), skipped = num(b.skipped);
  const ended = (job.status === 'done' || job.status === 'cancelled') && done + skipped >= total;
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
  page.skipped.textContent = skipped ? `⊘ ${skipped}: never run, the job was cancelled` : '0';
  page.skipped.dataset.skipped = String(skipped);
  page.steps.textContent = `${num(s.done)} done, ${num(s.failed)} failed`;
  const notStored = num(r.not_stored);
  page.results.textContent = `${size(num(r.bytes))} of at most ${size(num(r.max_bytes))}` +
    (notStored ? `; ${notStored} lines past that kept only their counts of steps and failures` : '');
  page.results.dataset.notStored = String(notStored);
  page.rate.textContent = rate(w, job, done, total, ended);
  page.created.replaceChildren(...when(job.created));
  page.started.replaceChildren(...when(job.started, job.created && `queued ${lasted(job.created, job.started)}`));
  const ran = job.status === 'cancelled'
    ? `cancelled ${lasted(job.started ?? job.created, job.finished)} after it ${job.started ? 'started' : 'was created'}`
    : `ran ${lasted(job.started, job.finished)}`;
  page.finished.replaceChildren(...when(job.finished, ran));
  page.job.hidden = false;
  if (page.failures.hidden) {
    page.failuresSummary.textContent = 'The results are read when the job ends; the button reads those so far.';
    page.failures.hidden = false;
  }
  return {total, done, skipped, ended};
}

// rate is batches per second: over the last polls while the job runs, over its whole run once it ended (when its
// started and finished times are timestamps), with the time left at that pace.
function rate(w, job, done, total, ended) {
  if (ended) {
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

const pad = (n, width = 2) => String(n).padStart(width, '0');

// when shows a time batchd sent (RFC 3339, UTC) in the browser's time zone, to the millisecond and with the zone's
// offset, as a <time> element whose datetime is the value as sent; note, when given, follows in parentheses. A
// missing time (null: not yet) is a dash.
function when(v, note) {
  if (v === undefined || v === null || v === '') return ['–'];
  const t = typeof v === 'string' ? Date.parse(v) : NaN;
  if (!Number.isFinite(t)) return [String(v)];
  const d = new Date(t);
  const off = -d.getTimezoneOffset();
  const zone = `UTC${off < 0 ? '-' : '+'}${pad(Math.floor(Math.abs(off) / 60))}:${pad(Math.abs(off) % 60)}`;
  const text = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)} ${zone}`;
  return [el('time', {datetime: v, title: `${v} (UTC)`}, text), note ? ` (${note})` : ''];
}

// lasted is the time from one RFC 3339 time to another, for people: seconds to the millisecond under a minute,
// minutes and seconds under an hour, else hours and minutes.
function lasted(from, to) {
  const ms = Date.parse(to) - Date.parse(from);
  if (!Number.isFinite(ms)) return '–';
  if (ms < 60e3) return `${(ms / 1000).toFixed(3)} s`;
  const secs = Math.round(ms / 1000);
  if (secs < 3600) return `${Math.floor(secs / 60)} min ${secs % 60} s`;
  return `${Math.floor(secs / 3600)} h ${Math.floor((secs % 3600) / 60)} min`;
}

// size is a number of bytes for people.
function size(n) {
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i ? Number(n.toFixed(1)) : n} ${units[i]}`;
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
    const problems = isObject(rec) ? lineFailures(rec) : [{key: '', status: 0, description: 'not a results line'}];
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
  page.failuresSummary.textContent = `${lines} lines read: ${failedLines} had a failure${more}${bad}.` +
    countsDiffer(w.ended, lines, failedLines);
  page.failuresSummary.dataset.lines = String(lines);
  page.failuresSummary.dataset.failedLines = String(failedLines);
  page.main.dataset.state = 'read';
  page.status.textContent = `Job ${w.id}: results read.`;
}

// countsDiffer explains, once every line of an ended job was read, why the lines listed differ from the failed
// batches batchd counts: a step whose status its ok_status accepts looks failed in the results, which do not say
// what the step accepts.
function countsDiffer(job, lines, failedLines) {
  const b = job && isObject(job.batches) ? job.batches : null;
  if (!b || lines !== num(b.done) || failedLines === num(b.failed)) return '';
  return ` batchd counts ${num(b.failed)} failed batches: a step that accepts its status with "ok_status" ` +
    '(a 404, say) looks failed here, because the results do not say which statuses it accepts.';
}

function safeJSON(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

// lineFailures lists what failed in one results line: the batch's ErrorResult, or its failed steps as
// {key, status, description}. A step not executed because of another is not listed: its cause is; nor is a step
// not run on its condition, which is no failure. A line past the job's answer cap has only its counts.
function lineFailures(rec) {
  if (rec.not_stored === true) {
    const failed = num(rec.failed);
    return failed === 0 ? [] : [{key: '', status: 0, description: `${failed} of ${num(rec.steps)} steps failed; ` +
      'the answer was not kept: the job\'s answers had reached their cap (-job-max-result-bytes)'}];
  }
  const answer = rec.answer;
  const er = errorResult(answer);
  if (er) return [{key: '', status: Math.floor(er.code / 10), description: er.description}];
  const responses = Array.isArray(answer) ? answer : isObject(answer) ? answer.responses : null;
  if (!Array.isArray(responses)) return [{key: '', status: 0, description: 'no answer for this line'}];
  return responses.filter((r) => isObject(r) && outcome(r) === 'failed').map((r) => ({
    key: String(r.key), status: r.status, description: errorResult(r.response)?.description ?? fanOutFailure(r),
  }));
}

// fanOutFailure says how many of a fan-out's calls failed and why the first did: its step's response (the array of
// the calls' bodies) is no ErrorResult to read that from.
function fanOutFailure(r) {
  const failed = Array.isArray(r.items) ? r.items.filter((c) => callOutcome(c) === 'failed') : [];
  if (failed.length === 0) return '';
  const why = errorResult(failed[0].response)?.description;
  return `${failed.length} of ${r.items.length} calls failed` + (why ? `; the first: ${why}` : '');
}

function failureRow(line, problems) {
  const shown = problems.slice(0, maxStepsListed).map((p) => el('li', {'data-key': p.key},
    p.key ? el('code', {}, p.key) : 'the batch', p.status ? ` ✗ ${p.status}` : ' ✗', p.description ? `: ${p.description}` : ''));
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
