// Package readme_test runs the README's quick start, install and
// walkthrough command blocks as bash scripts in a fresh clone, so that the
// README cannot drift from the code.
package readme_test

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// block is one ```sh block of the README and the ```text block after it
// (the lines its output must hold; … stands for any text).
type block struct {
	section string
	line    int
	script  string
	expect  []string
}

// readmeBlocks returns the sh blocks of the named sections, in order.
func readmeBlocks(t *testing.T, sections ...string) []block {
	t.Helper()
	f, err := os.Open("README.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := map[string]bool{}
	for _, s := range sections {
		want[s] = true
	}
	var (
		out     []block
		section string
		fence   string // "sh", "text" or "" outside a block
		cur     strings.Builder
		start   int
	)
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case fence == "" && strings.HasPrefix(line, "## "):
			section = strings.TrimPrefix(line, "## ")
		case fence == "" && (line == "```sh" || line == "```text") && want[section]:
			fence, start = strings.TrimPrefix(line, "```"), n
			cur.Reset()
		case fence != "" && line == "```":
			switch {
			case fence == "sh":
				out = append(out, block{section: section, line: start, script: cur.String()})
			case len(out) > 0 && out[len(out)-1].section == section:
				out[len(out)-1].expect = strings.Split(strings.TrimSpace(cur.String()), "\n")
			}
			fence = ""
		case fence != "":
			cur.WriteString(line + "\n")
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// pattern turns an expected line into a regexp: … matches anything.
func pattern(line string) *regexp.Regexp {
	parts := strings.Split(line, "…")
	for i, p := range parts {
		parts[i] = regexp.QuoteMeta(p)
	}
	return regexp.MustCompile(strings.Join(parts, ".*"))
}

// TestReadmeCommands runs, in a fresh clone of this repository, the
// install block, then the quick start's run (not its test command: this
// is a test) and every walkthrough, each as a bash script with -euo
// pipefail, and checks each output against the text block after it.
func TestReadmeCommands(t *testing.T) {
	for _, tool := range []string{"bash", "git", "kcat", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s is needed to run the README's walkthroughs (.ci/run installs it)", tool)
			}
			t.Skipf("%s is not installed", tool)
		}
	}
	dir := filepath.Join(t.TempDir(), "pushd")
	if out, err := exec.Command("git", "clone", "-q", ".", dir).CombinedOutput(); err != nil {
		t.Fatalf("cloning the repository: %v\n%s", err, out)
	}
	blocks := readmeBlocks(t, "Install", "Quick start", "Walkthroughs")
	var install []block
	var rest []block
	for _, b := range blocks {
		if b.section == "Install" {
			install = append(install, b)
		} else {
			rest = append(rest, b)
		}
	}
	if len(install) == 0 || len(rest) < 4 {
		t.Fatalf("found %d install and %d other blocks in the README's Install, Quick start and Walkthroughs", len(install), len(rest))
	}
	for _, b := range append(install, rest...) {
		var lines []string
		for _, l := range strings.Split(b.script, "\n") {
			if strings.Contains(l, "go test") {
				continue // the quick start's test command: this is a test
			}
			lines = append(lines, l)
		}
		script := "set -euo pipefail\n" + strings.Join(lines, "\n")
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		cmd := exec.CommandContext(ctx, "bash", "-c", script)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GOFLAGS=")
		// The blocks start background jobs: on a timeout end them all, and
		// do not wait for pipes they may still hold.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
		cmd.WaitDelay = 5 * time.Second
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("README.md:%d (%s): %v\n--- script\n%s\n--- output\n%s", b.line, b.section, err, script, out)
		}
		for _, e := range b.expect {
			if !pattern(e).Match(out) {
				t.Errorf("README.md:%d (%s): the output lacks %q\n--- output\n%s", b.line, b.section, e, out)
			}
		}
	}
}
