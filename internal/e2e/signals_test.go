package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pushd/pushd/internal/emulator"
)

// stdinRun is `pushd run` whose standard input the test holds open.
type stdinRun struct {
	cmd            *exec.Cmd
	in             io.WriteCloser
	stdout, stderr bytes.Buffer
	done           chan struct{}
}

func startWithStdin(t *testing.T, cfgPath string) *stdinRun {
	t.Helper()
	r := &stdinRun{cmd: exec.Command(pushdBin, "run", "-c", cfgPath), done: make(chan struct{})}
	r.cmd.Stdout, r.cmd.Stderr = &r.stdout, &r.stderr
	in, err := r.cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	r.in = in
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = r.cmd.Wait(); close(r.done) }()
	t.Cleanup(func() {
		select {
		case <-r.done:
		default:
			_ = r.cmd.Process.Kill()
			<-r.done
		}
		if t.Failed() {
			t.Logf("stdout:\n%s\nstderr (tail):\n%s", r.stdout.String(), tail(r.stderr.String(), 4000))
		}
	})
	return r
}

func (r *stdinRun) wait(t *testing.T, limit time.Duration) int {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(limit):
		t.Fatalf("pushd still running %v after the signal", limit)
	}
	return r.cmd.ProcessState.ExitCode()
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// TestStdinSignalBeforeTheEndSaysWhereItStopped: `pushd run < f` stopped by
// SIGTERM before its input ended exits 1 and names the last line read, so
// `pushd run < f && rm f` cannot lose the rest of f. Before, it exited 0.
func TestStdinSignalBeforeTheEndSaysWhereItStopped(t *testing.T) {
	t.Parallel()
	emu, ca, id := testEmulator(t, noQuotas)
	s := setup{emu: emu, ca: ca, dir: t.TempDir()}
	r := startWithStdin(t, s.writeConfig(t, "stdin-stop", pipelineOptions{source: "      type: stdin\n", batch: "{linger: 50ms}"}))
	for _, ev := range telemetry(t, 100) {
		if _, err := r.in.Write(append(ev, '\n')); err != nil {
			t.Fatal(err)
		}
	}
	waitLanded(t, emu, id, 100, 3*time.Minute)
	if err := r.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := r.wait(t, 60*time.Second); code != 1 {
		t.Fatalf("exit code %d, want 1 (input not read to its end)", code)
	}
	if want := "stopped before the end of the input, after line 100"; !strings.Contains(r.stderr.String(), want) {
		t.Fatalf("stderr does not say %q", want)
	}
	if strings.Contains(r.stdout.String(), "come again") {
		t.Fatalf("summary promises stdin events come again:\n%s", r.stdout.String())
	}
}

// TestSecondSignalExitsAtOnce: while the drain waits for sends that hang, a
// second SIGTERM ends pushd at once with exit 1 and the summary printed.
// Before, it was ignored until shutdown_timeout.
func TestSecondSignalExitsAtOnce(t *testing.T) {
	t.Parallel()
	emu, ca, _ := testEmulator(t, func(c *emulator.Config) {
		noQuotas(c)
		c.Faults.Latency = 5 * time.Minute
	})
	s := setup{emu: emu, ca: ca, dir: t.TempDir()}
	r := startWithStdin(t, s.writeConfig(t, "second-signal", pipelineOptions{
		source: "      type: stdin\n", batch: "{linger: 10ms}", shutdownTimeout: 5 * time.Minute,
	}))
	for _, ev := range telemetry(t, 50) {
		if _, err := r.in.Write(append(ev, '\n')); err != nil {
			t.Fatal(err)
		}
	}
	// Wait for the batch to be posted (and hang in the emulator).
	deadline := time.Now().Add(60 * time.Second)
	for emu.Stats().MaxInFlight == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if err := r.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	select {
	case <-r.done:
		t.Fatal("pushd exited on the first signal although its send hangs for 5 minutes")
	default:
	}
	if err := r.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := r.wait(t, 30*time.Second); code != 1 {
		t.Fatalf("exit code %d, want 1", code)
	}
	if out := r.stdout.String(); !strings.Contains(out, "pipeline telemetry: 50 events read") {
		t.Fatalf("no summary on stdout:\n%s", out)
	}
	if !strings.Contains(r.stderr.String(), "second signal") {
		t.Fatal("stderr does not say why pushd exited at once")
	}
}

// TestHTTPTrickleCannotHoldShutdown: a client sending its body at one byte
// a second does not keep pushd alive past shutdown_timeout (1 s here; the
// source's close is bounded by what is left of it, plus at most 1 s for a
// commit). Before, the HTTP source waited a fixed 10 s + 1 s.
func TestHTTPTrickleCannotHoldShutdown(t *testing.T) {
	t.Parallel()
	emu, ca, _ := testEmulator(t, noQuotas)
	s := setup{emu: emu, ca: ca, dir: t.TempDir()}
	cfg := s.writeConfig(t, "trickle", pipelineOptions{source: httpSource(""), shutdownTimeout: time.Second})
	p := startPushd(t, "trickle", cfg)
	p.waitReady(t)
	addr := httpSourceAddr(t, p)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/events HTTP/1.1\r\nHost: pushd\r\nContent-Type: application/x-ndjson\r\nContent-Length: 1000\r\n\r\n{")
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Second):
				if _, err := conn.Write([]byte(" ")); err != nil {
					return
				}
			}
		}
	}()
	time.Sleep(1500 * time.Millisecond) // the handler is reading the body
	_, took := p.stop(t, syscall.SIGTERM)
	// 1 s of shutdown_timeout, at most 1 s more for the close, and a wide
	// margin for a loaded machine: well under the 11 s it took before.
	if took > 8*time.Second {
		t.Fatalf("pushd took %v to exit after SIGTERM with shutdown_timeout 1s", took)
	}
}

// httpSourceAddr reads the HTTP source's address from the process's log.
func httpSourceAddr(t *testing.T, p *proc) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		data, _ := os.ReadFile(p.logPath)
		for _, line := range strings.Split(string(data), "\n") {
			if !strings.Contains(line, `"msg":"http source listening"`) {
				continue
			}
			if i := strings.Index(line, `"listen":"`); i >= 0 {
				rest := line[i+len(`"listen":"`):]
				return rest[:strings.IndexByte(rest, '"')]
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("the http source's address is not in the log")
	return ""
}
