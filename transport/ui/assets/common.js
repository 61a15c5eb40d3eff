// What the inspector and the jobs page share: building DOM nodes, calling batchd, and reading its answers.
// Everything from a server is put in the page as text (textContent, attributes), never as markup.

const svgNS = 'http://www.w3.org/2000/svg';

// el builds an HTML element: attrs are attributes (class, data-*, aria-*, …), children are nodes or strings.
export function el(tag, attrs = {}, ...children) {
  return build(document.createElement(tag), attrs, children);
}

// svg builds an SVG element likewise.
export function svg(tag, attrs = {}, ...children) {
  return build(document.createElementNS(svgNS, tag), attrs, children);
}

function build(node, attrs, children) {
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null && value !== false) node.setAttribute(name, String(value));
  }
  for (const c of children) {
    if (c !== undefined && c !== null && c !== false) node.append(c);
  }
  return node;
}

// call sends a request to batchd and reads its answer: {status, body (the parsed JSON, or null), text, ms}.
// A network failure is thrown as an Error that says so.
export async function call(url, init = {}) {
  const started = performance.now();
  let resp;
  try {
    resp = await fetch(url, init);
  } catch (err) {
    throw new Error(`batchd did not answer (${err.message}): is it running, and is this page served by it?`);
  }
  const text = await resp.text();
  let body = null;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON: the caller shows the text
  }
  return {status: resp.status, body, text, ms: performance.now() - started};
}

// api is the URL of a batchd endpoint, relative to the page (which batchd serves under /ui/), so that it holds
// behind a proxy that mounts batchd under a prefix.
export function api(path) {
  return new URL('../' + path, document.baseURI).href;
}

// errorResult returns {code, description, details} when body is a batchd ErrorResult
// ({"ok": false, "result": {"error", "description", "details"?}}), else null.
export function errorResult(body) {
  if (!isObject(body) || body.ok !== false || !isObject(body.result)) return null;
  const r = body.result;
  return {
    code: typeof r.error === 'number' ? r.error : 0,
    description: typeof r.description === 'string' ? r.description : '',
    details: Array.isArray(r.details) ? r.details.filter(isObject) : [],
  };
}

export function isObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

// Codes batchd gives a step it did not execute because of another step: 4120 (the batch stopped first,
// stop_on_error or atomic) and 4240 (a step it needs failed or was not executed).
const notExecutedCodes = new Set([4120, 4240]);

// conditionFalse is the code of a step not run because its "when" was false, or because it reads a step that was
// not run: status 204, and not a failure.
const conditionFalse = 2040;

// callFailed is batchd's rule for one call: its status is 400 or more, or its response is a JSON object with
// "ok": false; unless its status is one the step accepts (its ok_status), which makes it a success whatever its
// body.
function callFailed(status, response, okStatus) {
  if (okStatus.includes(status)) return false;
  return status >= 400 || (isObject(response) && response.ok === false);
}

// outcome classifies one result ({status, response, items?}) as batchd does, okStatus being its step's ok_status:
//   - "not-run": not run on its condition (status 204 with code 2040); not a failure;
//   - "skipped": not executed because of another step (a step it needs failed, or the batch stopped first);
//   - "failed": its call failed or, for a fan-out (a result with items), any of its calls did: a fan-out answers
//     200 when its failed calls did with "ok": false;
//   - "ok" otherwise.
export function outcome(result, okStatus = []) {
  const er = errorResult(result.response);
  if (er && er.code === conditionFalse && result.status === 204) return 'not-run';
  if (er && notExecutedCodes.has(er.code)) return 'skipped';
  if (callFailed(result.status, result.response, okStatus)) return 'failed';
  if (Array.isArray(result.items) && result.items.some((c) => callOutcome(c, okStatus) === 'failed')) return 'failed';
  return 'ok';
}

// callOutcome classifies one call of a fan-out ({status, response}): "failed" or "ok".
export function callOutcome(call, okStatus = []) {
  return isObject(call) && callFailed(call.status, call.response, okStatus) ? 'failed' : 'ok';
}

// outcomeMark is an outcome's sign and words, so that it reads without its colour.
export const outcomeMark = {ok: '✓ ok', failed: '✗ failed', skipped: '⊘ not executed', 'not-run': '○ not run (when)'};

// ms formats milliseconds for people: three significant decimals at most.
export function ms(v) {
  if (typeof v !== 'number' || !Number.isFinite(v)) return '–';
  if (v === 0) return '0 ms';
  if (v >= 100) return `${Math.round(v)} ms`;
  if (v >= 1) return `${v.toFixed(1)} ms`;
  return `${v.toFixed(3)} ms`;
}

// preview is a JSON value pretty-printed, cut at limit characters so that a huge response cannot stall the page.
export function preview(value, limit = 200000) {
  const text = JSON.stringify(value, null, 2) ?? 'null';
  if (text.length <= limit) return text;
  return text.slice(0, limit) + `\n… ${text.length - limit} more characters not shown`;
}

// showProblems fills a refusal's table from an answer that is not 2xx: every problem of result.details with its
// step key, reason and text; an answer that is not an ErrorResult is shown as its status and text.
export function showProblems(section, descriptionNode, listNode, answer) {
  const er = errorResult(answer.body);
  listNode.replaceChildren();
  if (!er) {
    descriptionNode.textContent = `HTTP ${answer.status}: ${answer.text.slice(0, 2000)}`;
    section.hidden = false;
    return 0;
  }
  descriptionNode.textContent = `HTTP ${answer.status}, error ${er.code}: ${er.description}`;
  for (const d of er.details) {
    const key = typeof d.key === 'string' && d.key !== '' ? d.key : '(the batch)';
    listNode.append(el('tr', {class: 'problem', 'data-key': d.key ?? '', 'data-reason': d.reason ?? ''},
      el('td', {}, el('code', {}, key)),
      el('td', {}, String(d.reason ?? '')),
      el('td', {}, String(d.problem ?? ''))));
  }
  section.hidden = false;
  return er.details.length;
}
