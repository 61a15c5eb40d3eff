package main

import (
	"fmt"
	"time"
)

// Row names used by the scenarios and their targets.
const (
	modeBatchd = "batchd"
	modeBase   = "batchd-base" // the -compare binary
	modeSeq    = "seq"
	modePar    = "par"
	// demo10
	modeBatch1  = "batchd, 1 client"
	modeSingle1 = "one by one, 1 client"
	modeBatchC  = "batchd, concurrent"
	modeSingleC = "one by one, concurrent"
)

// target is one target of a scenario (README.md here), evaluated as a ratio (or a difference) inside one run.
type target struct {
	Desc   string  `json:"target"` // e.g. "batchd p50 ≤ par p50"
	Detail string  `json:"detail"` // the numbers that went into Value
	Value  float64 `json:"value"`
	Limit  float64 `json:"limit"`
	AtMost bool    `json:"at_most"` // Value ≤ Limit passes; otherwise Value ≥ Limit does
	Unit   string  `json:"unit,omitempty"`
	Pass   bool    `json:"pass"`
}

// String is the target line with its verdict.
func (t target) String() string { return t.line() + " " + passFail(t.Pass) }

// line is the target line without the verdict.
func (t target) line() string {
	op := "≥"
	if t.AtMost {
		op = "≤"
	}
	return fmt.Sprintf("%s: %s = %.3f%s (target %s %.2f%s)", t.Desc, t.Detail, t.Value, t.Unit, op, t.Limit, t.Unit)
}

// ratioTarget builds a target on num/den; a zero denominator (the baseline was not measured) fails it.
func ratioTarget(desc, detail string, num, den, limit float64, atMost bool) target {
	t := target{Desc: desc, Detail: detail, Limit: limit, AtMost: atMost}
	if den <= 0 || num <= 0 {
		t.Detail += " (not measured)"
		return t
	}
	t.Value = num / den
	if atMost {
		t.Pass = t.Value <= limit
	} else {
		t.Pass = t.Value >= limit
	}
	return t
}

// evalTargets evaluates a scenario's targets on its rows (by mode). Rows that are not valid measurements (errors,
// wrong upstream count) fail their targets.
func evalTargets(scenario string, rows map[string]phaseResult) []target {
	p50 := func(mode string) float64 {
		r, ok := rows[mode]
		if !ok || !r.ok() {
			return 0
		}
		return float64(r.Lat.P50)
	}
	tput := func(mode string) float64 {
		r, ok := rows[mode]
		if !ok || !r.ok() {
			return 0
		}
		return r.StepsPerSecond()
	}
	ms := func(v float64) string { return fmtMS(time.Duration(v)) }
	switch scenario {
	case "a50":
		b, p := p50(modeBatchd), p50(modePar)
		return []target{ratioTarget("batchd p50 ≤ 1.1 × par p50",
			fmt.Sprintf("%s / %s", ms(b), ms(p)), b, p, 1.1, true)}
	case "b50":
		b, p := p50(modeBatchd), p50(modePar)
		return []target{ratioTarget("batchd p50 ≤ 1.05 × par p50",
			fmt.Sprintf("%s / %s", ms(b), ms(p)), b, p, 1.05, true)}
	case "c10":
		b, s := p50(modeBatchd), p50(modeSeq)
		return []target{ratioTarget("batchd p50 ≤ 1.01 × seq p50",
			fmt.Sprintf("%s / %s", ms(b), ms(s)), b, s, 1.01, true)}
	case "d10":
		b, p := tput(modeBatchd), tput(modePar)
		out := []target{ratioTarget("batchd throughput ≥ 0.9 × par throughput",
			fmt.Sprintf("%.0f / %.0f steps/s", b, p), b, p, 0.9, false)}
		bc, sc := float64(rows[modeBatchd].ServerCPUPerGroup()), float64(rows[modeSeq].ClientCPUPerGroup())
		if !rows[modeBatchd].ok() || !rows[modeSeq].ok() {
			bc, sc = 0, 0
		}
		return append(out, ratioTarget("batchd's CPU per 10-step batch ≤ 1.2 × the seq client's CPU for its 10 calls",
			fmt.Sprintf("%s / %s", fmtUS(time.Duration(bc)), fmtUS(time.Duration(sc))), bc, sc, 1.2, true))
	case jobScenario:
		j, i := tput(modeJob), tput(modeInteractive)
		return []target{ratioTarget("job steps/s ≥ 0.8 × interactive d10 steps/s",
			fmt.Sprintf("%.0f / %.0f steps/s", j, i), j, i, 0.8, false)}
	case "demo10":
		b, s := tput(modeBatchC), tput(modeSingleC)
		out := []target{ratioTarget("batched steps/s ≥ 5 × one-by-one steps/s (same concurrency)",
			fmt.Sprintf("%.0f / %.0f steps/s", b, s), b, s, 5, false)}
		bl, sl := p50(modeBatch1), p50(modeSingle1)
		added := target{Desc: "added latency of a 10-step batch over one call ≤ 1 ms (p50 batch − p50 single call)",
			Detail: fmt.Sprintf("%s − %s", ms(bl), ms(sl)), Limit: 1, AtMost: true, Unit: " ms"}
		if bl > 0 && sl > 0 {
			added.Value = (bl - sl) / float64(time.Millisecond)
			added.Pass = added.Value <= added.Limit
		} else {
			added.Detail += " (not measured)"
		}
		return append(out, added)
	}
	return nil
}

// fmtUS formats a CPU time in microseconds.
func fmtUS(d time.Duration) string {
	return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
}

// fmtMS formats a duration in milliseconds, the unit of every table.
func fmtMS(d time.Duration) string {
	return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
}

// contextNotes are figures that help read a scenario's target, not targets themselves: what the client alone
// achieves against the same floor, and batchd's gap in absolute terms.
func contextNotes(scenario string, rows map[string]phaseResult) []string {
	valid := func(mode string) (phaseResult, bool) {
		r, ok := rows[mode]
		return r, ok && r.ok()
	}
	b, okB := valid(modeBatchd)
	var out []string
	if base, ok := valid(modeBase); ok && okB {
		if scenario == "d10" {
			out = append(out, fmt.Sprintf("batchd ÷ batchd-base (-compare) throughput = %.0f / %.0f steps/s = %.3f",
				b.StepsPerSecond(), base.StepsPerSecond(), b.StepsPerSecond()/base.StepsPerSecond()))
		} else {
			out = append(out, fmt.Sprintf("batchd ÷ batchd-base (-compare) p50 = %s / %s = %.3f; p99 = %s / %s = %.3f",
				fmtMS(b.Lat.P50), fmtMS(base.Lat.P50), float64(b.Lat.P50)/float64(base.Lat.P50),
				fmtMS(b.Lat.P99), fmtMS(base.Lat.P99), float64(b.Lat.P99)/float64(base.Lat.P99)))
		}
	}
	switch scenario {
	case jobScenario:
		a, okA := valid(modeOneAlone)
		d, okD := valid(modeOneDuringJob)
		if okA && okD && rows[modeJobBeside].ok() {
			out = append(out, fmt.Sprintf("one client's d10 batches while a job runs ÷ alone: p50 %s / %s = %.3f; p99 %s / %s = %.3f",
				fmtMS(d.Lat.P50), fmtMS(a.Lat.P50), float64(d.Lat.P50)/float64(a.Lat.P50),
				fmtMS(d.Lat.P99), fmtMS(a.Lat.P99), float64(d.Lat.P99)/float64(a.Lat.P99)))
		}
	case "a50":
		if s, ok := valid(modeSeq); ok && okB {
			out = append(out, fmt.Sprintf("for scale: batchd p50 − par p50 = %s; seq p50 = %s (%s per call)",
				fmtMS(b.Lat.P50-rows[modePar].Lat.P50), fmtMS(s.Lat.P50), fmtMS(s.Lat.P50/50)))
		}
	case "b50":
		s, okS := valid(modeSeq)
		p, okP := valid(modePar)
		if okS && okP {
			one := s.Lat.P50 / 50
			out = append(out, fmt.Sprintf("for scale: the client's own best, par p50 / one call = %s / %s = %.3f; batchd p50 / par p50 = %.3f",
				fmtMS(p.Lat.P50), fmtMS(one), float64(p.Lat.P50)/float64(one), float64(b.Lat.P50)/float64(p.Lat.P50)))
		}
	case "c10":
		if s, ok := valid(modeSeq); ok && okB {
			gap := b.Lat.P50 - s.Lat.P50
			out = append(out, fmt.Sprintf("for scale: batchd p50 − seq p50 = %s over 10 steps (%s per step; the 2%% allowance is %s)",
				fmtMS(gap), fmtMS(gap/10), fmtMS(s.Lat.P50/50)))
		}
	case "d10":
		if s, ok := valid(modeSeq); ok && okB {
			out = append(out, fmt.Sprintf("for scale: batchd / seq throughput = %.3f", b.Throughput/s.Throughput))
		}
		if b.ServerCPU > 0 {
			cpu := fmt.Sprintf("CPU per group of 10 calls, read from /proc and getrusage around each window: batchd %s (its client %s)",
				fmtUS(b.ServerCPUPerGroup()), fmtUS(b.ClientCPUPerGroup()))
			if base, ok := valid(modeBase); ok && base.ServerCPU > 0 {
				cpu += fmt.Sprintf(", batchd-base %s", fmtUS(base.ServerCPUPerGroup()))
			}
			for _, m := range []string{modeSeq, modePar} {
				if c, ok := valid(m); ok {
					cpu += fmt.Sprintf(", %s client %s", m, fmtUS(c.ClientCPUPerGroup()))
				}
			}
			out = append(out, cpu)
		} else {
			out = append(out, "CPU not measured: batchd's process is not the tool's child (-target), or this is not Linux")
		}
	}
	return out
}
