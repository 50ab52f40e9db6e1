package bench

import (
	"fmt"
	"html"
	"strings"
)

// SVG layout, in pixels.
const (
	svgWidth   = 960
	svgLabelW  = 250 // metric labels on the left
	svgBarMaxW = 520 // longest bar
	svgBarH    = 11
	svgRowH    = 32
	svgTitleH  = 30
)

// renderSVG draws one panel per scenario, and in it, per figure, a bar for the relay and one for the direct path
// (or baseline), both scaled to the larger of the two, labelled with the values and the ratio. Latency percentiles
// and throughput thus sit side by side without sharing an axis they cannot share.
func renderSVG(rep *Report) string {
	var body strings.Builder
	y := 56
	for _, s := range rep.Scenarios {
		fmt.Fprintf(&body, `<text x="10" y="%d" class="h">%s</text>`+"\n", y+18, esc(s.Name))
		if s.Error != "" {
			fmt.Fprintf(&body, `<text x="120" y="%d" class="err">failed: %s</text>`+"\n", y+18, esc(firstLine(s.Error)))
		} else {
			fmt.Fprintf(&body, `<text x="120" y="%d" class="n">generator CPU %.0f%%</text>`+"\n", y+18, 100*s.Generator)
		}
		y += svgTitleH
		for _, r := range s.Rows {
			scale := max(r.Relay, r.Direct)
			w := func(v float64) float64 {
				if scale <= 0 || v <= 0 {
					return 0
				}
				return v / scale * svgBarMaxW
			}
			label := r.Metric
			if r.Unit != "" {
				label += " (" + r.Unit + ")"
			}
			fmt.Fprintf(&body, `<text x="%d" y="%d" class="l">%s</text>`+"\n", svgLabelW-8, y+svgBarH+4, esc(label))
			fmt.Fprintf(&body, `<rect x="%d" y="%d" width="%.1f" height="%d" class="relay"/>`+"\n", svgLabelW, y, w(r.Relay), svgBarH)
			fmt.Fprintf(&body, `<text x="%.1f" y="%d" class="v">%s</text>`+"\n", float64(svgLabelW)+w(r.Relay)+4, y+svgBarH-1, esc(fmtNum(r.Relay)))
			yd := y + svgBarH + 2
			fmt.Fprintf(&body, `<rect x="%d" y="%d" width="%.1f" height="%d" class="direct"/>`+"\n", svgLabelW, yd, w(r.Direct), svgBarH)
			dl := baseLabel(r)
			if r.Direct != 0 {
				dl += fmt.Sprintf("   ratio %.2f×", r.Ratio)
			}
			if r.GoalMet != nil {
				dl += "   goal " + r.Goal + map[bool]string{true: " ✓", false: " ✗"}[*r.GoalMet]
			}
			fmt.Fprintf(&body, `<text x="%.1f" y="%d" class="v">%s</text>`+"\n", float64(svgLabelW)+w(r.Direct)+4, yd+svgBarH-1, esc(dl))
			y += svgRowH
		}
		y += 10
	}
	m := rep.Machine
	var out strings.Builder
	fmt.Fprintf(&out, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif">`+"\n",
		svgWidth, y+10, svgWidth, y+10)
	out.WriteString(`<style>.h{font-size:15px;font-weight:bold}.n{font-size:11px;fill:#555}.err{font-size:12px;fill:#b00}` +
		`.l{font-size:11px;text-anchor:end}.v{font-size:10px;fill:#333}.relay{fill:#e07b39}.direct{fill:#3b75af}</style>` + "\n")
	fmt.Fprintf(&out, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&out, `<text x="10" y="20" class="h">switchboard bench — %s</text>`+"\n", esc(rep.Started.Format("2006-01-02 15:04 UTC")))
	fmt.Fprintf(&out, `<text x="10" y="38" class="n">%d cores, %d MiB, %s, %s, commit %s. </text>`+"\n",
		m.Cores, m.MemoryMiB, esc(m.CPUModel), esc(m.GoVersion), esc(shortCommit(m)))
	fmt.Fprintf(&out, `<rect x="620" y="8" width="12" height="10" class="relay"/><text x="636" y="17" class="v">through the relay</text>`+
		`<rect x="760" y="8" width="12" height="10" class="direct"/><text x="776" y="17" class="v">direct / baseline</text>`+"\n")
	out.WriteString(body.String())
	out.WriteString("</svg>\n")
	return out.String()
}

func esc(s string) string { return html.EscapeString(s) }
