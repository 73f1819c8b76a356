// Package webui serves the live pages of pushd (the emulator's page and the
// daemon's status page): their HTML, CSS and JavaScript are plain files
// embedded in the binary, with no build step and nothing fetched from
// elsewhere. The pages fetch JSON from their own origin only, and every
// response carries a Content-Security-Policy that forbids anything else
// (no inline script or style, no other origin, no framing).
package webui

import (
	"embed"
	"errors"
	"io/fs"
	"mime"
	"net/http"
	"path"
)

// ContentSecurityPolicy is sent with every page, asset and JSON answer of
// the pages: only the served origin, no inline code, no plugins, no framing.
const ContentSecurityPolicy = "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'"

//go:embed common.css chart.js icon.svg
var shared embed.FS

// SetHeaders sets the security headers of every page response.
func SetHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", ContentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
}

// Page serves the file name of fsys as an HTML page.
func Page(fsys fs.FS, name string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		b, err := fs.ReadFile(fsys, name)
		if err != nil {
			http.Error(w, "page not found", http.StatusInternalServerError)
			return
		}
		SetHeaders(w)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(b)
	}
}

// Assets serves the file named by the {file} path value from fsys, or
// from the shared assets (common.css, chart.js, icon.svg) when fsys has no such file.
func Assets(fsys fs.FS) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name := path.Clean(r.PathValue("file"))
		b, err := fs.ReadFile(fsys, name)
		if errors.Is(err, fs.ErrNotExist) {
			b, err = fs.ReadFile(shared, name)
		}
		if err != nil || !fs.ValidPath(name) {
			http.NotFound(w, r)
			return
		}
		SetHeaders(w)
		ctype := mime.TypeByExtension(path.Ext(name))
		if ctype == "" {
			ctype = "application/octet-stream"
		}
		w.Header().Set("Content-Type", ctype)
		_, _ = w.Write(b)
	}
}
