// The batch inspector: plan a batch (a dry run) and draw its plan as a graph by level, run it with timings and
// show each step's outcome on the graph, its response, and a timeline.
import {
  api, call, callOutcome, el, errorResult, isObject, ms, outcome, outcomeMark, preview, showProblems, svg,
} from './common.js';

const $ = (id) => document.getElementById(id);
const page = {
  main: $('inspector'), batch: $('batch'), file: $('file'), example: $('example'), plan: $('plan'), run: $('run'),
  status: $('status'), problems: $('problems'), problemsDescription: $('problems-description'),
  problemsList: $('problems-list'), graph: $('graph'), detail: $('detail'), detailTitle: $('detail-title'),
  detailFacts: $('detail-facts'), detailCalls: $('detail-calls'), detailCallsList: $('detail-calls-list'),
  detailResponseTitle: $('detail-response-title'), detailResponse: $('detail-response'), summary: $('summary'),
  timeline: $('timeline'),
};

// The largest file the page loads into the editor: far above any batch batchd takes (-max-body, 1 MiB by default).
const maxFile = 16 << 20;

// A batch for the embedded demo API (batchd without -upstream): a chain, a fan-in, a slow step and a failure.
const example = `{
  "stop_on_error": false,
  "requests": [
    {"key": "ProducerAdd", "path": "Producer/Add", "payload": {"name": "Coca-Cola"}},
    {"key": "ProducerGet", "path": "Producer/Get", "payload": {"ids": ["\${ProducerAdd.result.new_id}"]}},
    {"key": "Rename", "path": "Producer/Edit",
     "payload": {"id": "\${ProducerAdd.result.new_id}", "name": "Coca-Cola Zero"}},
    {"key": "Slow", "path": "Demo/Sleep", "payload": {"ms": 40}},
    {"key": "Fail", "path": "Demo/Fail", "payload": {"description": "this step always fails"}, "depends_on": ["Slow"]},
    {"key": "AfterFail", "path": "Demo/Echo", "payload": {"got": "\${Fail.result}"}},
    {"key": "Report", "path": "Demo/Echo",
     "payload": {"renamed": "\${Rename.result.row_affected}", "name": "\${ProducerGet.result.0.name}"}}
  ]
}`;

// The most calls of a fan-out listed one by one in a step's details; its whole response is shown below them.
const maxCallsListed = 100;

// What the page shows: the plan drawn, what the batch's text says of its steps beyond the plan (stepOptions), and
// the results of the last run by key (empty before a run).
let shown = {plan: null, options: new Map(), results: new Map(), selected: null};

// stepOptions reads from the batch as written what its plan does not say about each step, by key: its for_each,
// when and ok_status ({forEach, when, okStatus}). A step without a key has its index as key, as batchd gives it.
// Text that is not a batch gives no options (batchd refuses it anyway).
function stepOptions(text) {
  let doc;
  try {
    doc = JSON.parse(text);
  } catch {
    return new Map();
  }
  const steps = Array.isArray(doc) ? doc : isObject(doc) ? doc.requests ?? doc.batch : null;
  const options = new Map();
  if (!Array.isArray(steps)) return options;
  steps.forEach((s, i) => {
    if (!isObject(s)) return;
    options.set(typeof s.key === 'string' ? s.key : String(i), {
      forEach: typeof s.for_each === 'string' ? s.for_each : '',
      when: typeof s.when === 'string' ? s.when : '',
      okStatus: Array.isArray(s.ok_status) ? s.ok_status.filter(Number.isInteger) : [],
    });
  });
  return options;
}

const noOptions = {forEach: '', when: '', okStatus: []};
const optionsOf = (key) => shown.options.get(key) ?? noOptions;

// stepOutcome is a result's outcome, its step's ok_status taken into account.
const stepOutcome = (r) => outcome(r, optionsOf(r.key).okStatus);

// begin starts an action: the buttons are disabled and the page's state is "busy" under a new sequence number,
// which tests (and anyone scripting the page) read to tell this action's end from an earlier one's.
function begin(what) {
  page.main.dataset.seq = String(Number(page.main.dataset.seq) + 1);
  page.main.dataset.state = 'busy';
  page.plan.disabled = page.run.disabled = true;
  page.status.textContent = what;
}

function end(state, message) {
  page.main.dataset.state = state;
  page.plan.disabled = page.run.disabled = false;
  page.status.textContent = message;
}

// dryRun asks batchd for the plan of text: {plan} or, when refused, {answer}.
async function dryRun(text) {
  const answer = await call(api('v1/batch?dry_run=true'), {
    method: 'POST', headers: {'Content-Type': 'application/json'}, body: text,
  });
  if (answer.status === 200 && isObject(answer.body) && isObject(answer.body.plan)) return {plan: answer.body.plan};
  return {answer};
}

// runBody is the body that runs text with timings, and a note for the user when it differs in more than that:
//   - an object without "timings" gains "timings": true as its first member, the rest sent as written (so batchd
//     still sees and refuses what is wrong with it, a duplicate member for instance);
//   - a bare array of steps cannot ask for timings, so it is sent as {"timings": true, "batch": [...]}: the same
//     steps with the same keys, answered as an object rather than a bare array;
//   - an object that sets "timings" itself, and text that is not JSON, are sent as written.
function runBody(text) {
  let doc;
  try {
    doc = JSON.parse(text);
  } catch {
    return {body: text, note: ''}; // batchd says what is wrong with it
  }
  if (Array.isArray(doc)) {
    return {
      body: '{"timings":true,"batch":' + text + '}',
      note: 'A bare array of steps cannot ask for timings, so it ran as {"batch": […]}: the same steps and keys.',
    };
  }
  if (isObject(doc) && Object.keys(doc).length > 0 && !('timings' in doc)) {
    return {body: text.replace(/^\s*\{/, '{"timings":true,'), note: ''};
  }
  if (isObject(doc) && doc.timings === false) {
    return {body: text, note: 'The batch sets "timings": false, so there is no timeline.'};
  }
  return {body: text, note: ''};
}

async function onPlan() {
  begin('Planning…');
  clearProblems();
  try {
    const got = await dryRun(page.batch.value);
    if (!got.plan) return refused(got.answer);
    shown = {plan: got.plan, options: stepOptions(page.batch.value), results: new Map(), selected: null};
    draw();
    drawTimeline(null);
    hideDetail();
    const p = got.plan;
    end('planned', `Planned: ${p.steps.length} steps in ${p.levels} levels; critical path ${p.critical_path.join(' → ')}. Nothing was sent.`);
  } catch (err) {
    end('error', err.message);
  }
}

async function onRun() {
  begin('Running…');
  clearProblems();
  try {
    const text = page.batch.value;
    const got = await dryRun(text); // the graph to show the results on; a refused batch runs nothing
    if (!got.plan) return refused(got.answer);
    const {body, note} = runBody(text);
    const answer = await call(api('v1/batch'), {
      method: 'POST', headers: {'Content-Type': 'application/json'}, body,
    });
    if (answer.status !== 200) return refused(answer);
    if (isObject(answer.body) && isObject(answer.body.plan)) { // the batch asks for a dry run itself
      shown = {plan: answer.body.plan, options: stepOptions(text), results: new Map(), selected: null};
      draw();
      drawTimeline(null);
      return end('planned', 'The batch sets "dry_run": true, so batchd planned it and sent nothing.');
    }
    const responses = Array.isArray(answer.body) ? answer.body : answer.body?.responses;
    if (!Array.isArray(responses)) return end('error', `Unexpected answer: ${answer.text.slice(0, 500)}`);
    const results = new Map(responses.filter(isObject).map((r) => [r.key, r]));
    shown = {plan: got.plan, options: stepOptions(text), results, selected: null};
    draw();
    drawTimeline(answer.body, answer.ms);
    hideDetail();
    const counts = {ok: 0, failed: 0, skipped: 0, 'not-run': 0};
    for (const r of results.values()) counts[stepOutcome(r)]++;
    const notRun = counts['not-run'] ? `, ${counts['not-run']} not run on a condition` : '';
    end('ran', `Ran ${results.size} steps: ${counts.ok} ok, ${counts.failed} failed, ${counts.skipped} not executed${notRun}. ${note}`.trim());
  } catch (err) {
    end('error', err.message);
  }
}

function refused(answer) {
  const n = showProblems(page.problems, page.problemsDescription, page.problemsList, answer);
  shown = {plan: null, options: new Map(), results: new Map(), selected: null};
  page.graph.replaceChildren();
  page.graph.dataset.state = 'empty';
  drawTimeline(null);
  hideDetail();
  end('refused', `batchd refused the batch (HTTP ${answer.status}${n ? `, ${n} problems` : ''}); nothing was executed.`);
}

function clearProblems() {
  page.problems.hidden = true;
  page.problemsList.replaceChildren();
}

// Node geometry, in SVG user units.
const W = 190, H = 62, GAP_LEVEL = 70, GAP_SIBLING = 18, PAD = 12;

// layout places each step: levels along the main axis (columns, or rows in a narrow window), and within a level
// steps ordered by the mean position of their inputs, so that edges cross less. It returns a Map key → {x, y}.
function layout(plan, rows) {
  const byLevel = [];
  plan.steps.forEach((s, i) => (byLevel[s.level] ??= []).push(i));
  const slot = new Map(); // key → index within its level
  const mean = (i) => {
    const deps = plan.steps[i].depends_on.filter((k) => slot.has(k));
    return deps.length ? deps.reduce((a, k) => a + slot.get(k), 0) / deps.length : 0;
  };
  for (const level of byLevel) {
    if (!level) continue;
    const order = level.map((i) => ({i, m: mean(i)})).sort((a, b) => a.m - b.m || a.i - b.i);
    order.forEach(({i}, j) => slot.set(plan.steps[i].key, j));
    level.splice(0, level.length, ...order.map((o) => o.i));
  }
  const widest = Math.max(1, ...byLevel.map((l) => (l ? l.length : 0)));
  const pos = new Map();
  byLevel.forEach((level, l) => {
    if (!level) return;
    const offset = (widest - level.length) / 2; // centre each level on the widest
    level.forEach((i, j) => {
      const along = PAD + l * ((rows ? H : W) + GAP_LEVEL);
      const across = PAD + (j + offset) * ((rows ? W : H) + GAP_SIBLING);
      pos.set(plan.steps[i].key, rows ? {x: across, y: along} : {x: along, y: across});
    });
  });
  const levels = byLevel.length;
  const size = rows
    ? {w: 2 * PAD + widest * (W + GAP_SIBLING) - GAP_SIBLING, h: 2 * PAD + levels * (H + GAP_LEVEL) - GAP_LEVEL}
    : {w: 2 * PAD + levels * (W + GAP_LEVEL) - GAP_LEVEL, h: 2 * PAD + widest * (H + GAP_SIBLING) - GAP_SIBLING};
  return {pos, size};
}

function clip(s, n) {
  return s.length > n ? s.slice(0, n - 1) + '…' : s;
}

// draw draws the shown plan, with the results of the last run when there are any.
function draw() {
  const plan = shown.plan;
  const rows = page.graph.clientWidth < 640; // a narrow window: one row per level, top to bottom
  const {pos, size} = layout(plan, rows);
  const critical = new Set(plan.critical_path);
  const criticalEdges = new Set();
  for (let i = 1; i < plan.critical_path.length; i++) {
    criticalEdges.add(plan.critical_path[i - 1] + '\u0000' + plan.critical_path[i]);
  }

  const root = svg('svg', {
    viewBox: `0 0 ${size.w} ${size.h}`, width: size.w, height: size.h, role: 'group',
    'aria-label': `Plan: ${plan.steps.length} steps in ${plan.levels} levels`, 'data-orient': rows ? 'rows' : 'columns',
  });
  root.append(svg('defs', {},
    svg('marker', {id: 'arrow', viewBox: '0 0 10 10', refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse'},
      svg('path', {d: 'M 0 0 L 10 5 L 0 10 z', class: 'arrowhead'})),
    svg('marker', {id: 'arrow-critical', viewBox: '0 0 10 10', refX: 10, refY: 5, markerWidth: 6, markerHeight: 6, orient: 'auto-start-reverse'},
      svg('path', {d: 'M 0 0 L 10 5 L 0 10 z', class: 'arrowhead critical'}))));

  const edges = svg('g', {class: 'edges'});
  for (const s of plan.steps) {
    const to = pos.get(s.key);
    for (const from of s.depends_on) {
      const a = pos.get(from);
      if (!a) continue;
      let d;
      if (rows) {
        const x1 = a.x + W / 2, y1 = a.y + H, x2 = to.x + W / 2, y2 = to.y, c = (y2 - y1) / 2;
        d = `M ${x1} ${y1} C ${x1} ${y1 + c}, ${x2} ${y2 - c}, ${x2} ${y2}`;
      } else {
        const x1 = a.x + W, y1 = a.y + H / 2, x2 = to.x, y2 = to.y + H / 2, c = (x2 - x1) / 2;
        d = `M ${x1} ${y1} C ${x1 + c} ${y1}, ${x2 - c} ${y2}, ${x2} ${y2}`;
      }
      const isCritical = criticalEdges.has(from + '\u0000' + s.key);
      edges.append(svg('path', {
        d, class: isCritical ? 'edge critical' : 'edge', 'data-from': from, 'data-to': s.key,
        'marker-end': isCritical ? 'url(#arrow-critical)' : 'url(#arrow)',
      }, svg('title', {}, `${from} → ${s.key}`)));
    }
  }
  root.append(edges);

  const nodes = svg('g', {class: 'nodes'});
  for (const s of plan.steps) {
    const p = pos.get(s.key);
    const r = shown.results.get(s.key);
    const o = r ? stepOutcome(r) : null;
    const opt = optionsOf(s.key);
    const calls = r && Array.isArray(r.items) ? r.items.length : null;
    const onPath = critical.has(s.key);
    const classes = ['node', onPath && 'critical', o && `outcome-${o}`, shown.selected === s.key && 'selected'];
    // After a run: the outcome and status, and a fan-out's number of calls; before: the level, and whether the step
    // fans out or has a condition.
    const statusText = r
      ? `${outcomeMark[o]} · ${r.status}${calls !== null ? ` · ${calls} calls` : ''}`
      : [`level ${s.level}`, opt.forEach && 'for each', opt.when && 'when'].filter(Boolean).join(' · ');
    const label = [`step ${s.key}`, `${s.method} ${s.path}`, `level ${s.level}`,
      s.depends_on.length ? `after ${s.depends_on.join(', ')}` : 'no inputs', onPath && 'on the critical path',
      opt.forEach && `one call per element of ${opt.forEach}`, opt.when && `runs when ${opt.when}`,
      r && `status ${r.status}, ${outcomeMark[o]}`, calls !== null && `${calls} calls`].filter(Boolean).join('; ');
    const g = svg('g', {
      class: classes.filter(Boolean).join(' '), transform: `translate(${p.x} ${p.y})`, tabindex: 0, role: 'button',
      'aria-label': label, 'data-key': s.key, 'data-level': s.level, 'data-critical': onPath ? 'true' : 'false',
      'data-outcome': o ?? undefined, 'data-status': r ? r.status : undefined, 'data-calls': calls ?? undefined,
    },
    svg('title', {}, label),
    svg('rect', {width: W, height: H, rx: 6, ry: 6}),
    svg('text', {x: 10, y: 19, class: 'key'}, clip(s.key, 22)),
    svg('text', {x: 10, y: 36, class: 'call'}, clip(`${s.method} ${s.path}`, 28)),
    svg('text', {x: 10, y: 53, class: 'mark'}, (onPath ? '◆ ' : '') + statusText));
    g.addEventListener('click', () => select(s.key));
    g.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' || ev.key === ' ') {
        ev.preventDefault();
        select(s.key);
      }
    });
    nodes.append(g);
  }
  root.append(nodes);
  page.graph.replaceChildren(root);
  page.graph.dataset.state = shown.results.size ? 'ran' : 'planned';
}

// select shows a step's facts and, after a run, its response and, for a fan-out, each of its calls.
function select(key) {
  shown.selected = key;
  for (const n of page.graph.querySelectorAll('.node')) n.classList.toggle('selected', n.dataset.key === key);
  const s = shown.plan.steps.find((x) => x.key === key);
  const r = shown.results.get(key);
  const opt = optionsOf(key);
  page.detailTitle.textContent = `Step ${key}`;
  const facts = [['call', `${s.method} ${s.path}`], ['level', String(s.level)],
    ['waits for', s.depends_on.length ? s.depends_on.join(', ') : 'nothing'],
    ['critical path', shown.plan.critical_path.includes(key) ? 'yes' : 'no']];
  if (opt.forEach) facts.push(['for each', `${opt.forEach}: one call per element`]);
  if (opt.when) facts.push(['when', `${opt.when}: runs only if it holds`]);
  if (opt.okStatus.length) facts.push(['ok statuses', `${opt.okStatus.join(', ')} count as success`]);
  if (r) {
    facts.push(['status', `${r.status} (${outcomeMark[stepOutcome(r)]})`]);
    if (isObject(r.timing)) {
      facts.push(['queued', ms(r.timing.queued_ms)], ['started', ms(r.timing.started_ms)], ['call took', ms(r.timing.duration_ms)]);
    }
    const er = errorResult(r.response);
    if (er && er.description) facts.push(['error', `${er.code}: ${er.description}`]);
  }
  page.detailFacts.replaceChildren(...facts.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
  showCalls(r, opt.okStatus);
  page.detailResponseTitle.textContent = r && Array.isArray(r.items)
    ? 'Response: the calls\' bodies in element order, as placeholders read it' : 'Response';
  page.detailResponse.textContent = r ? preview(r.response) : 'Not run yet: Run shows its response here.';
  page.detail.dataset.key = key;
  page.detail.hidden = false;
}

// showCalls lists a fan-out's calls, each with its status and outcome, its response shown when it is opened; a
// result without items hides the list.
function showCalls(r, okStatus) {
  const items = r && Array.isArray(r.items) ? r.items : null;
  page.detailCallsList.replaceChildren();
  page.detailCalls.hidden = items === null;
  if (!items) return;
  const failed = items.filter((c) => callOutcome(c, okStatus) === 'failed').length;
  page.detailCalls.querySelector('h3').textContent =
    `${items.length} calls: ${items.length - failed} ok, ${failed} failed`;
  items.slice(0, maxCallsListed).forEach((c, i) => {
    const o = callOutcome(c, okStatus);
    const status = isObject(c) ? c.status : '';
    page.detailCallsList.append(el('li', {class: `call outcome-${o}`, 'data-index': i, 'data-status': status, 'data-outcome': o},
      el('details', {},
        el('summary', {}, `call ${i} · ${outcomeMark[o]} · ${status}`),
        el('pre', {class: 'response'}, preview(isObject(c) ? c.response : c, 20000)))));
  });
  if (items.length > maxCallsListed) {
    page.detailCallsList.append(el('li', {class: 'more'},
      `and ${items.length - maxCallsListed} more calls: their responses are in the response below`));
  }
}

function hideDetail() {
  page.detail.hidden = true;
  delete page.detail.dataset.key;
}

// drawTimeline draws one row per step of a run's answer: waiting for inputs (batch start → queued), for a slot
// (queued → started), and the call (started → started + duration). answer null clears it.
function drawTimeline(answer, roundTripMs) {
  page.timeline.replaceChildren();
  page.summary.textContent = '';
  page.timeline.dataset.state = 'empty';
  if (!answer) return;
  const responses = (Array.isArray(answer) ? answer : answer.responses).filter(isObject);
  const timed = responses.filter((r) => isObject(r.timing));
  if (timed.length === 0) {
    page.summary.textContent = 'No timings in the answer: the batch did not ask for them.';
    return;
  }
  const end = (t) => (typeof t.started_ms === 'number' ? t.started_ms + (t.duration_ms ?? 0) : t.queued_ms ?? 0);
  const span = Math.max(1e-3, ...timed.map((r) => end(r.timing)));
  const pct = (v) => `${Math.min(100, Math.max(0, (v / span) * 100))}%`;
  const order = [...responses].sort((a, b) => sortKey(a) - sortKey(b));
  page.timeline.append(el('div', {class: 'tl-axis', 'aria-hidden': 'true'},
    el('span', {}), el('span', {class: 'tl-scale'}, el('span', {}, '0'), el('span', {}, ms(span))), el('span', {})));
  for (const r of order) {
    const t = isObject(r.timing) ? r.timing : {};
    const o = stepOutcome(r);
    const track = el('div', {class: 'tl-track'});
    const seg = (cls, from, to, what) => {
      const s = el('span', {class: `seg ${cls}`, title: `${what}: ${ms(from)} → ${ms(to)}`});
      s.style.left = pct(from);
      s.style.width = pct(Math.max(0, to - from));
      track.append(s);
    };
    const ran = typeof t.started_ms === 'number';
    if (typeof t.queued_ms === 'number' && t.queued_ms > 0) seg('wait', 0, t.queued_ms, 'waiting for inputs');
    if (ran) {
      seg('slot', t.queued_ms ?? 0, t.started_ms, 'waiting for a slot');
      seg(`call outcome-${o}`, t.started_ms, t.started_ms + (t.duration_ms ?? 0), 'the call');
    }
    const numbers = ran
      ? `queued ${ms(t.queued_ms)} · started ${ms(t.started_ms)} · took ${ms(t.duration_ms)}`
      : o === 'not-run'
        ? `not run on its condition (decided at ${ms(t.queued_ms)})`
        : `not executed (ready at ${ms(t.queued_ms)})`;
    page.timeline.append(el('div', {
      class: `tl-row outcome-${o}`, 'data-key': r.key, 'data-outcome': o,
      'data-queued': t.queued_ms, 'data-started': t.started_ms, 'data-duration': t.duration_ms,
    },
    el('span', {class: 'tl-label'}, el('code', {}, clip(String(r.key), 24)), ' ', `${outcomeMark[o]} ${r.status}`),
    track,
    el('span', {class: 'tl-numbers'}, numbers)));
  }
  const cp = typeof answer.critical_path_ms === 'number' ? answer.critical_path_ms : null;
  page.summary.textContent = `Critical path ${ms(cp)}; last step ended at ${ms(span)}; the browser's round trip took ${ms(roundTripMs)}.`;
  page.timeline.dataset.state = 'ran';
}

function sortKey(r) {
  const t = isObject(r.timing) ? r.timing : {};
  if (typeof t.started_ms === 'number') return t.started_ms;
  return 1e12 + (t.queued_ms ?? 0); // never executed: last
}

async function onFile() {
  const f = page.file.files[0];
  if (!f) return;
  if (f.size > maxFile) {
    page.status.textContent = `${f.name} is ${f.size} bytes; the page loads files up to ${maxFile} bytes.`;
    return;
  }
  page.batch.value = await f.text();
  page.status.textContent = `Loaded ${f.name} (${f.size} bytes). Plan or Run it.`;
}

page.plan.addEventListener('click', onPlan);
page.run.addEventListener('click', onRun);
page.file.addEventListener('change', onFile);
page.example.addEventListener('click', () => {
  page.batch.value = example;
  page.status.textContent = 'The demo example: it calls the embedded demo API (batchd without -upstream).';
});
// The graph's orientation follows the window's width.
let resizeTimer = 0;
window.addEventListener('resize', () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => shown.plan && draw(), 150);
});
