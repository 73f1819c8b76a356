// Package webuitest drives a headless Chromium through the DevTools
// protocol, so that tests can open pushd's pages, run their JavaScript,
// read the DOM and take screenshots. It speaks just enough WebSocket for
// that (text frames to a loopback browser), to need no dependency.
package webuitest

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// Find returns the Chromium binary: $PUSHD_CHROMIUM, else the first of
// chromium, chromium-browser, google-chrome on $PATH.
func Find() (string, error) {
	if p := os.Getenv("PUSHD_CHROMIUM"); p != "" {
		return p, nil
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("no chromium on $PATH (Debian: apt-get install chromium; or set PUSHD_CHROMIUM)")
}

// Require returns the Chromium binary, or skips the test when there is
// none; under CI=1 a missing Chromium fails the test instead.
func Require(t *testing.T) string {
	t.Helper()
	p, err := Find()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI is set and %v", err)
		}
		t.Skip(err)
	}
	return p
}

// Flags are the flags every headless run gets: no network of its own, no
// first-run work, nothing that talks to Google.
var Flags = []string{
	"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
	"--disable-background-networking", "--disable-component-update", "--disable-sync",
	"--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio",
}

// Browser is a running headless Chromium and its DevTools connection.
type Browser struct {
	cmd  *exec.Cmd
	conn *conn
}

// Start launches Chromium with Flags, extra flags and a fresh profile in a
// temporary directory, and connects to it; the browser is closed when the
// test ends.
func Start(t *testing.T, binary string, extra ...string) *Browser {
	t.Helper()
	args := append(append([]string{}, Flags...), extra...)
	args = append(args, "--user-data-dir="+t.TempDir(), "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1", "about:blank")
	cmd := exec.Command(binary, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", binary, err)
	}
	b := &Browser{cmd: cmd}
	t.Cleanup(b.close)
	found := make(chan string, 1)
	var logMu sync.Mutex
	var log strings.Builder
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			logMu.Lock()
			log.WriteString(line + "\n")
			logMu.Unlock()
			if _, ws, ok := strings.Cut(line, "DevTools listening on "); ok {
				select {
				case found <- strings.TrimSpace(ws):
				default:
				}
			}
		}
	}()
	var wsURL string
	select {
	case wsURL = <-found:
	case <-time.After(60 * time.Second):
		logMu.Lock()
		defer logMu.Unlock()
		t.Fatalf("chromium did not print its DevTools address within 60s; stderr:\n%s", log.String())
	}
	c, err := dial(wsURL)
	if err != nil {
		t.Fatalf("connecting to chromium at %s: %v", wsURL, err)
	}
	b.conn = c
	return b
}

func (b *Browser) close() {
	if b.conn != nil {
		_, _ = b.conn.call(context.Background(), "", "Browser.close", nil)
		b.conn.close()
	}
	done := make(chan struct{})
	go func() { _ = b.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = b.cmd.Process.Kill()
		<-done
	}
}

// Page is one tab.
type Page struct {
	b       *Browser
	session string
	mu      sync.Mutex
	// problems are console errors, uncaught exceptions and CSP reports.
	problems []string
}

// Open makes a tab with a width×height window and loads url.
func (b *Browser) Open(ctx context.Context, url string, width, height int) (*Page, error) {
	var target struct {
		TargetID string `json:"targetId"`
	}
	if err := b.conn.callInto(ctx, "", "Target.createTarget", map[string]any{"url": "about:blank"}, &target); err != nil {
		return nil, err
	}
	var att struct {
		SessionID string `json:"sessionId"`
	}
	if err := b.conn.callInto(ctx, "", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &att); err != nil {
		return nil, err
	}
	p := &Page{b: b, session: att.SessionID}
	b.conn.subscribe(att.SessionID, p.event)
	for _, step := range []struct {
		method string
		params any
	}{
		{"Runtime.enable", nil}, {"Log.enable", nil}, {"Page.enable", nil},
		{"Emulation.setDeviceMetricsOverride", map[string]any{"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600}},
		{"Page.navigate", map[string]any{"url": url}},
	} {
		if _, err := b.conn.call(ctx, p.session, step.method, step.params); err != nil {
			return nil, fmt.Errorf("%s: %w", step.method, err)
		}
	}
	return p, nil
}

func (p *Page) event(method string, params json.RawMessage) {
	var text string
	switch method {
	case "Runtime.exceptionThrown":
		text = "exception: " + string(params)
	case "Runtime.consoleAPICalled":
		var e struct {
			Type string `json:"type"`
		}
		_ = json.Unmarshal(params, &e)
		if e.Type == "error" {
			text = "console.error: " + string(params)
		}
	case "Log.entryAdded":
		var e struct {
			Entry struct {
				Level, Source, Text, URL string
			} `json:"entry"`
		}
		_ = json.Unmarshal(params, &e)
		if e.Entry.Level == "error" {
			text = fmt.Sprintf("log %s: %s %s", e.Entry.Source, e.Entry.Text, e.Entry.URL)
		}
	}
	if text != "" {
		p.mu.Lock()
		p.problems = append(p.problems, text)
		p.mu.Unlock()
	}
}

// Problems returns the console errors, exceptions and policy violations
// the page reported so far.
func (p *Page) Problems() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.problems...)
}

// Eval runs a JavaScript expression (awaiting a promise) and decodes its
// value into out (when not nil).
func (p *Page) Eval(ctx context.Context, expr string, out any) error {
	var res struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text      string `json:"text"`
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	err := p.b.conn.callInto(ctx, p.session, "Runtime.evaluate", map[string]any{
		"expression": expr, "returnByValue": true, "awaitPromise": true,
	}, &res)
	if err != nil {
		return err
	}
	if ex := res.ExceptionDetails; ex != nil {
		return fmt.Errorf("evaluating %q: %s %s", expr, ex.Text, ex.Exception.Description)
	}
	if out != nil && len(res.Result.Value) > 0 {
		return json.Unmarshal(res.Result.Value, out)
	}
	return nil
}

// WaitFor evaluates expr every 100ms until it returns true or ctx ends;
// the error then says what the last evaluation gave.
func (p *Page) WaitFor(ctx context.Context, what, expr string) error {
	var last error
	for {
		var ok bool
		last = p.Eval(ctx, expr, &ok)
		if last == nil && ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (last evaluation: %v)", what, ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Screenshot saves the page as PNG: the window, or the whole page when
// full is true.
func (p *Page) Screenshot(ctx context.Context, path string, full bool) error {
	var res struct {
		Data string `json:"data"`
	}
	if err := p.b.conn.callInto(ctx, p.session, "Page.captureScreenshot", map[string]any{"format": "png", "captureBeyondViewport": full}, &res); err != nil {
		return err
	}
	png, err := base64.StdEncoding.DecodeString(res.Data)
	if err != nil {
		return fmt.Errorf("decoding the screenshot: %w", err)
	}
	return os.WriteFile(path, png, 0o644)
}

// conn is a DevTools WebSocket connection: calls by id, events by session.
type conn struct {
	nc   net.Conn
	wmu  sync.Mutex
	mu   sync.Mutex
	next int64
	wait map[int64]chan reply
	subs map[string]func(string, json.RawMessage)
	err  error
	done chan struct{}
}

type reply struct {
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func dial(wsURL string) (*conn, error) {
	u, err := url.Parse(wsURL)
	if err != nil {
		return nil, err
	}
	nc, err := net.DialTimeout("tcp", u.Host, 10*time.Second)
	if err != nil {
		return nil, err
	}
	key := make([]byte, 16)
	_, _ = rand.Read(key)
	req := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n",
		u.RequestURI(), u.Host, base64.StdEncoding.EncodeToString(key))
	if _, err := io.WriteString(nc, req); err != nil {
		nc.Close()
		return nil, err
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("websocket handshake: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		nc.Close()
		return nil, fmt.Errorf("websocket handshake: %s", resp.Status)
	}
	c := &conn{nc: nc, wait: map[int64]chan reply{}, subs: map[string]func(string, json.RawMessage){}, done: make(chan struct{})}
	go c.readLoop(br)
	return c, nil
}

func (c *conn) close() { c.nc.Close(); <-c.done }

func (c *conn) subscribe(session string, f func(string, json.RawMessage)) {
	c.mu.Lock()
	c.subs[session] = f
	c.mu.Unlock()
}

func (c *conn) callInto(ctx context.Context, session, method string, params, out any) error {
	raw, err := c.call(ctx, session, method, params)
	if err != nil {
		return err
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("%s: decoding the result: %w", method, err)
		}
	}
	return nil
}

func (c *conn) call(ctx context.Context, session, method string, params any) (json.RawMessage, error) {
	ch := make(chan reply, 1)
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return nil, c.err
	}
	c.next++
	id := c.next
	c.wait[id] = ch
	c.mu.Unlock()
	msg := map[string]any{"id": id, "method": method}
	if params != nil {
		msg["params"] = params
	}
	if session != "" {
		msg["sessionId"] = session
	}
	b, _ := json.Marshal(msg)
	if err := c.writeFrame(b); err != nil {
		return nil, fmt.Errorf("%s: %w", method, err)
	}
	select {
	case r := <-ch:
		if r.Error != nil {
			return nil, fmt.Errorf("%s: %s (%d)", method, r.Error.Message, r.Error.Code)
		}
		return r.Result, nil
	case <-c.done:
		return nil, fmt.Errorf("%s: connection closed: %v", method, c.err)
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.wait, id)
		c.mu.Unlock()
		return nil, fmt.Errorf("%s: %w", method, ctx.Err())
	}
}

// writeFrame sends one masked text frame (clients must mask).
func (c *conn) writeFrame(payload []byte) error {
	hdr := []byte{0x81}
	switch n := len(payload); {
	case n < 126:
		hdr = append(hdr, 0x80|byte(n))
	case n < 1<<16:
		hdr = append(hdr, 0x80|126, byte(n>>8), byte(n))
	default:
		hdr = append(hdr, 0x80|127)
		hdr = binary.BigEndian.AppendUint64(hdr, uint64(n))
	}
	mask := make([]byte, 4)
	_, _ = rand.Read(mask)
	hdr = append(hdr, mask...)
	buf := make([]byte, len(payload))
	for i, b := range payload {
		buf[i] = b ^ mask[i%4]
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := c.nc.Write(append(hdr, buf...))
	return err
}

// readLoop reads frames, joins fragments and dispatches messages.
func (c *conn) readLoop(r *bufio.Reader) {
	var err error
	defer func() {
		c.mu.Lock()
		c.err = fmt.Errorf("devtools connection: %w", err)
		c.mu.Unlock()
		close(c.done)
	}()
	var msg []byte
	for {
		var h [2]byte
		if _, err = io.ReadFull(r, h[:]); err != nil {
			return
		}
		fin, op := h[0]&0x80 != 0, h[0]&0x0f
		n := uint64(h[1] & 0x7f)
		switch n {
		case 126:
			var b [2]byte
			if _, err = io.ReadFull(r, b[:]); err != nil {
				return
			}
			n = uint64(binary.BigEndian.Uint16(b[:]))
		case 127:
			var b [8]byte
			if _, err = io.ReadFull(r, b[:]); err != nil {
				return
			}
			n = binary.BigEndian.Uint64(b[:])
		}
		payload := make([]byte, n)
		if _, err = io.ReadFull(r, payload); err != nil {
			return
		}
		switch op {
		case 0x8: // close
			err = io.EOF
			return
		case 0x9, 0xA: // ping, pong: Chromium sends none to its clients
			continue
		}
		msg = append(msg, payload...)
		if !fin {
			continue
		}
		c.dispatch(msg)
		msg = nil
	}
}

func (c *conn) dispatch(b []byte) {
	var m struct {
		ID        int64           `json:"id"`
		Method    string          `json:"method"`
		Params    json.RawMessage `json:"params"`
		SessionID string          `json:"sessionId"`
		reply
	}
	if json.Unmarshal(b, &m) != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if m.ID != 0 {
		if ch := c.wait[m.ID]; ch != nil {
			delete(c.wait, m.ID)
			ch <- m.reply
		}
		return
	}
	if f := c.subs[m.SessionID]; f != nil {
		f(m.Method, m.Params)
	}
}
