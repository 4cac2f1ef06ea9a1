package main

import (
	"bufio"
	"encoding/csv"
	"errors"
	"flag"
	"fmt"
	"html"
	"io"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
)

// sample is one raw row: one target, one size, one round.
type sample struct {
	round             int
	family, target    string
	size              int
	status            string // ok, na, pending, failed
	fps, sentFps      float64
	switchCPU, genCPU float64
}

// cell is the summary of one target at one size over all rounds.
type cell struct {
	status   string // ok, or why there is no number
	fps      float64
	lo, hi   float64
	cpu      float64 // median switch CPU (cores); -1 unknown
	rounds   int
	hasValue bool
}

type family struct {
	name    string
	targets []string
	sizes   []int
	cells   map[string]map[int]*cell
}

func reportMain(args []string) error {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	in := fs.String("in", "", "raw rounds (CSV written by scripts/bench-peers.sh)")
	machine := fs.String("machine", "", "machine description: key=value lines")
	md := fs.String("md", "", "markdown table to write")
	svg := fs.String("svg", "", "SVG chart to write")
	if err := fs.Parse(args); err != nil {
		return err
	}
	f, err := os.Open(*in)
	if err != nil {
		return err
	}
	defer f.Close()
	samples, err := readSamples(f)
	if err != nil {
		return err
	}
	meta, err := readMachine(*machine)
	if err != nil {
		return err
	}
	fams := summarize(samples)
	if *md != "" {
		if err := os.WriteFile(*md, []byte(markdown(fams, meta)), 0o644); err != nil {
			return err
		}
	}
	if *svg != "" {
		if err := os.WriteFile(*svg, []byte(chart(fams, meta)), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func readSamples(r io.Reader) ([]sample, error) {
	cr := csv.NewReader(r)
	cr.Comment = '#'
	rows, err := cr.ReadAll()
	if err != nil {
		return nil, err
	}
	var out []sample
	for i, row := range rows {
		if i == 0 && row[0] == "round" {
			continue
		}
		if len(row) != 9 {
			return nil, fmt.Errorf("row %d: %d fields, want 9", i+1, len(row))
		}
		var s sample
		var errs [6]error
		s.round, errs[0] = strconv.Atoi(row[0])
		s.family, s.target, s.status = row[1], row[2], row[4]
		s.size, errs[1] = strconv.Atoi(row[3])
		s.fps, errs[2] = parseNum(row[5])
		s.sentFps, errs[3] = parseNum(row[6])
		s.switchCPU, errs[4] = parseNum(row[7])
		s.genCPU, errs[5] = parseNum(row[8])
		if err := errors.Join(errs[:]...); err != nil {
			return nil, fmt.Errorf("row %d: %w", i+1, err)
		}
		out = append(out, s)
	}
	return out, nil
}

func parseNum(s string) (float64, error) {
	if s == "" {
		return -1, nil
	}
	return strconv.ParseFloat(s, 64)
}

// machineKeys are shown in this order; others follow sorted.
var machineKeys = []string{"date", "cpu", "nproc", "kernel", "go", "vknetd", "rounds", "duration"}

func readMachine(path string) (map[string]string, error) {
	m := map[string]string{}
	if path == "" {
		return m, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if ok {
			m[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return m, sc.Err()
}

func summarize(samples []sample) []*family {
	var fams []*family
	byName := map[string]*family{}
	vals := map[string]map[string]map[int][]sample{}
	for _, s := range samples {
		f := byName[s.family]
		if f == nil {
			f = &family{name: s.family, cells: map[string]map[int]*cell{}}
			byName[s.family] = f
			fams = append(fams, f)
			vals[s.family] = map[string]map[int][]sample{}
		}
		if vals[s.family][s.target] == nil {
			f.targets = append(f.targets, s.target)
			vals[s.family][s.target] = map[int][]sample{}
		}
		if !containsInt(f.sizes, s.size) {
			f.sizes = append(f.sizes, s.size)
		}
		vals[s.family][s.target][s.size] = append(vals[s.family][s.target][s.size], s)
	}
	for _, f := range fams {
		sort.Ints(f.sizes)
		for _, t := range f.targets {
			f.cells[t] = map[int]*cell{}
			for _, size := range f.sizes {
				f.cells[t][size] = summarizeCell(vals[f.name][t][size])
			}
		}
	}
	return fams
}

func summarizeCell(ss []sample) *cell {
	c := &cell{status: "missing", cpu: -1}
	var fps, cpu []float64
	for _, s := range ss {
		if s.status != "ok" {
			c.status = s.status
			continue
		}
		fps = append(fps, s.fps)
		if s.switchCPU >= 0 {
			cpu = append(cpu, s.switchCPU)
		}
	}
	if len(fps) == 0 {
		return c
	}
	sort.Float64s(fps)
	c.status, c.hasValue, c.rounds = "ok", true, len(fps)
	c.fps, c.lo, c.hi = median(fps), fps[0], fps[len(fps)-1]
	if len(cpu) > 0 {
		sort.Float64s(cpu)
		c.cpu = median(cpu)
	}
	return c
}

func median(v []float64) float64 {
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

func containsInt(v []int, x int) bool {
	for _, y := range v {
		if y == x {
			return true
		}
	}
	return false
}

// familyTitles say what each family of rows measures.
var familyTitles = map[string]string{
	"socket":   "Unix-socket transports: frames/s forwarded, 2 sender/receiver pairs of batched clients",
	"vhost":    "vhost-user: frames/s forwarded between two DPDK testpmd guests (virtio-user, lcore on CPU 0; switch on CPU 1)",
	"vhost-mq": "vhost-user, multi-queue: the same guests with the queue pairs of queues above, 256 flows, 4x the frames in flight",
}

func title(f *family) string {
	if t, ok := familyTitles[f.name]; ok {
		return t
	}
	return f.name
}

func mega(v float64) string {
	switch {
	case v >= 10e6:
		return fmt.Sprintf("%.1f M", v/1e6)
	case v >= 1e6:
		return fmt.Sprintf("%.2f M", v/1e6)
	default:
		return fmt.Sprintf("%.3f M", v/1e6)
	}
}

func (c *cell) text() string {
	if !c.hasValue {
		return c.status
	}
	s := mega(c.fps)
	if c.rounds > 1 && c.fps > 0 {
		s += fmt.Sprintf(" ±%.0f%%", 50*(c.hi-c.lo)/c.fps)
	}
	if c.cpu >= 0 {
		s += fmt.Sprintf(" · %.2f CPU", c.cpu)
	}
	return s
}

func machineLine(meta map[string]string) string {
	var parts []string
	seen := map[string]bool{}
	for _, k := range machineKeys {
		if v, ok := meta[k]; ok {
			parts = append(parts, k+": "+v)
			seen[k] = true
		}
	}
	var rest []string
	for k := range meta {
		if !seen[k] {
			rest = append(rest, k)
		}
	}
	sort.Strings(rest)
	for _, k := range rest {
		parts = append(parts, k+": "+meta[k])
	}
	return strings.Join(parts, "; ")
}

// ratioRows compares each vknetd row with the anchors of its family.
var anchors = map[string][]string{
	"socket":   {"vde_switch", "direct SEQPACKET socketpair"},
	"vhost":    {"testpmd vhost", "OVS-DPDK"},
	"vhost-mq": {"testpmd vhost", "OVS-DPDK"},
}

func markdown(fams []*family, meta map[string]string) string {
	var b strings.Builder
	b.WriteString("# vknetd and the switches users would pick instead\n\n")
	b.WriteString("Written by `make bench-peers` (scripts/bench-peers.sh); raw rounds in peers.csv.\n\n")
	b.WriteString("Machine and run: " + machineLine(meta) + ".\n\n")
	b.WriteString("Each cell: median frames/s over the rounds (rounds alternate between targets), " +
		"± half the spread between the slowest and fastest round, and the switch process's CPU " +
		"(cores busy, from /proc) while it was measured.\n")
	for _, f := range fams {
		fmt.Fprintf(&b, "\n## %s\n\n| target |", title(f))
		for _, s := range f.sizes {
			fmt.Fprintf(&b, " %d B |", s)
		}
		b.WriteString("\n| --- |")
		for range f.sizes {
			b.WriteString(" --- |")
		}
		b.WriteString("\n")
		for _, t := range f.targets {
			fmt.Fprintf(&b, "| %s |", t)
			for _, s := range f.sizes {
				fmt.Fprintf(&b, " %s |", f.cells[t][s].text())
			}
			b.WriteString("\n")
		}
		if f.name == "vhost" || f.name == "vhost-mq" {
			b.WriteString("\ntestpmd's vhost backend and OVS-DPDK busy-poll: a CPU figure well below 1.00 means " +
				"other processes took their core during that point, and the rate with it.\n")
		}
		var rows []string
		for _, t := range f.targets {
			if !strings.HasPrefix(t, "vknetd") {
				continue
			}
			for _, a := range anchors[f.name] {
				ac, ok := f.cells[a]
				if !ok {
					continue
				}
				row := fmt.Sprintf("| %s / %s |", t, a)
				any := false
				for _, s := range f.sizes {
					c, d := f.cells[t][s], ac[s]
					if c.hasValue && d.hasValue && d.fps > 0 {
						row += fmt.Sprintf(" %.2f |", c.fps/d.fps)
						any = true
					} else {
						row += " - |"
					}
				}
				if any {
					rows = append(rows, row)
				}
			}
		}
		if len(rows) > 0 {
			b.WriteString("\nRatios of the medians:\n\n| ratio |")
			for _, s := range f.sizes {
				fmt.Fprintf(&b, " %d B |", s)
			}
			b.WriteString("\n| --- |")
			for range f.sizes {
				b.WriteString(" --- |")
			}
			b.WriteString("\n" + strings.Join(rows, "\n") + "\n")
		}
	}
	return b.String()
}

// palette: vknetd rows in blues and greens, the peers in warm colours and
// the limits in grey.
func color(target string, i int) string {
	switch {
	case strings.HasPrefix(target, "direct"):
		return "#9e9e9e"
	case strings.HasPrefix(target, "vknetd"):
		blues := []string{"#1f5fa8", "#3f8fd6", "#2a9d8f", "#7fb3e0", "#155e75"}
		return blues[i%len(blues)]
	default:
		warm := []string{"#e07b39", "#c0392b", "#d4a017", "#8e5a9b"}
		return warm[i%len(warm)]
	}
}

// shortNum writes an axis value: 20k, 1M, 5M.
func shortNum(v float64) string {
	switch {
	case v >= 1e6:
		return strconv.FormatFloat(v/1e6, 'g', 3, 64) + "M"
	case v >= 1e3:
		return strconv.FormatFloat(v/1e3, 'g', 3, 64) + "k"
	}
	return strconv.FormatFloat(v, 'g', 3, 64)
}

func chart(fams []*family, meta map[string]string) string {
	const width, panelH, top = 960.0, 330.0, 56.0
	var b strings.Builder
	height := top + float64(len(fams))*(panelH+70) + 10
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="16" y="24" font-size="17" font-weight="bold">vknetd and its peers (make bench-peers): frames/s, median of the rounds</text>`+"\n")
	sub := meta["date"] + " · " + meta["nproc"] + " x " + meta["cpu"] + " · Linux " + meta["kernel"]
	fmt.Fprintf(&b, `<text x="16" y="42" fill="#555">%s</text>`+"\n", html.EscapeString(sub))
	y0 := top
	for _, f := range fams {
		chartPanel(&b, f, 16, y0, width-32, panelH)
		y0 += panelH + 70
	}
	b.WriteString("</svg>\n")
	return b.String()
}

func chartPanel(b *strings.Builder, f *family, x0, y0, w, h float64) {
	fmt.Fprintf(b, `<text x="%.0f" y="%.0f" font-size="14" font-weight="bold">%s</text>`+"\n", x0, y0+14, html.EscapeString(title(f)))
	left, plotTop, plotH := x0+64, y0+30, h-60
	plotW := w - 64
	// A log scale: the rows span two orders of magnitude (STREAM batches
	// frames, vde_switch does not), and ratios read as equal distances.
	minV, maxV := math.Inf(1), 0.0
	for _, t := range f.targets {
		for _, s := range f.sizes {
			if c := f.cells[t][s]; c.hasValue && c.fps > 0 {
				minV, maxV = math.Min(minV, c.fps), math.Max(maxV, c.fps)
			}
		}
	}
	if maxV == 0 {
		minV, maxV = 1e5, 1e6
	}
	loExp, hiExp := math.Floor(math.Log10(minV)), math.Ceil(math.Log10(maxV))
	if hiExp <= loExp {
		hiExp = loExp + 1
	}
	bottom := plotTop + plotH
	yOf := func(v float64) float64 { return bottom - (math.Log10(v)-loExp)/(hiExp-loExp)*plotH }
	for e := loExp; e <= hiExp; e++ {
		for _, m := range []float64{1, 2, 5} {
			v := m * math.Pow(10, e)
			if e == hiExp && m > 1 {
				break
			}
			y := yOf(v)
			stroke := "#eeeeee"
			if m == 1 {
				stroke = "#cccccc"
			}
			fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s"/>`+"\n", left, y, left+plotW, y, stroke)
			fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="end" fill="#555">%s</text>`+"\n", left-6, y+4, shortNum(v))
		}
	}
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" fill="#555" transform="rotate(-90 %.1f %.1f)" text-anchor="middle">frames/s (log scale)</text>`+"\n",
		x0+10, plotTop+plotH/2, x0+10, plotTop+plotH/2)
	groupW := plotW / float64(len(f.sizes))
	barW := math.Min(44, (groupW-30)/float64(len(f.targets)))
	for gi, s := range f.sizes {
		gx := left + float64(gi)*groupW + (groupW-barW*float64(len(f.targets)))/2
		for ti, t := range f.targets {
			c := f.cells[t][s]
			x := gx + float64(ti)*barW
			if !c.hasValue {
				fmt.Fprintf(b, `<text x="%.1f" y="%.1f" transform="rotate(-90 %.1f %.1f)" fill="#888" font-size="11">%s</text>`+"\n",
					x+barW/2+4, bottom-4, x+barW/2+4, bottom-4, html.EscapeString(c.status))
				continue
			}
			bh := bottom - yOf(math.Max(c.fps, math.Pow(10, loExp)))
			fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s, %d B: %s</title></rect>`+"\n",
				x+1, bottom-bh, barW-2, bh, color(t, ti), html.EscapeString(t), s, html.EscapeString(c.text()))
			fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle" font-size="10">%s</text>`+"\n",
				x+barW/2, bottom-bh-3, strings.ReplaceAll(mega(c.fps), " ", ""))
		}
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle">%d-byte frames</text>`+"\n", left+float64(gi)*groupW+groupW/2, bottom+16, s)
	}
	fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#333"/>`+"\n", left, bottom, left+plotW, bottom)
	lx, ly := left, bottom+38
	for ti, t := range f.targets {
		fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="12" height="12" fill="%s"/><text x="%.1f" y="%.1f">%s</text>`+"\n",
			lx, ly-10, color(t, ti), lx+16, ly, html.EscapeString(t))
		lx += 26 + 7*float64(len(t))
		if lx > left+plotW-150 {
			lx, ly = left, ly+16
		}
	}
}
