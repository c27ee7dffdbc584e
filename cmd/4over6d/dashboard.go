package main

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"
)

// The dashboard at / of the admin endpoint: a static page that polls the
// JSON API (/api/v1/...) from the browser. Everything it needs is embedded
// in the binary, so it works offline and on an isolated lab network.
//
//go:embed dashboard
var dashboardFiles embed.FS

// dashboardCSP allows only the page's own files and same-origin API calls:
// no inline script or style, no other origin, no framing, no plugins.
const dashboardCSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; object-src 'none'"

// dashboardAsset is one embedded file, ready to serve.
type dashboardAsset struct {
	body        []byte
	contentType string
	etag        string
	// version is the content hash the page adds to the asset's URL
	// (?v=...): a request with it may be cached for good, since another
	// build with other content has another URL.
	version string
}

// dashboardHandler serves the dashboard page at / and its files at
// /assets/NAME, for GET and HEAD. It adds security headers to every answer.
// The page holds no data (the API does), so it needs no token itself: a
// browser cannot send a Bearer header when it opens a URL. Mount it on
// "/" (the mux gives it only what no other pattern matches; "GET /" would
// conflict with a pattern such as "/api/"): anything but / and the known
// assets is 404, any method but GET and HEAD 405.
func dashboardHandler() http.Handler {
	d, err := loadDashboard(dashboardFiles)
	if err != nil {
		panic(err) // the files are embedded at build time; a test covers them
	}
	return d
}

type dashboard struct {
	page   dashboardAsset
	assets map[string]dashboardAsset // by name under /assets/
}

// loadDashboard reads the page and its assets and rewrites the page's
// asset references to versioned URLs.
func loadDashboard(files fs.FS) (*dashboard, error) {
	d := &dashboard{assets: map[string]dashboardAsset{}}
	entries, err := fs.ReadDir(files, "dashboard")
	if err != nil {
		return nil, fmt.Errorf("failed to list the dashboard files: %w", err)
	}
	var page []byte
	for _, e := range entries {
		body, err := fs.ReadFile(files, path.Join("dashboard", e.Name()))
		if err != nil {
			return nil, fmt.Errorf("failed to read dashboard file %s: %w", e.Name(), err)
		}
		if e.Name() == "index.html" {
			page = body
			continue
		}
		d.assets[e.Name()] = newDashboardAsset(e.Name(), body)
	}
	if page == nil {
		return nil, fmt.Errorf("dashboard has no index.html")
	}
	for name, a := range d.assets {
		ref := []byte(`"assets/` + name + `"`)
		page = bytes.ReplaceAll(page, ref, []byte(`"assets/`+name+`?v=`+a.version+`"`))
	}
	d.page = newDashboardAsset("index.html", page)
	return d, nil
}

func newDashboardAsset(name string, body []byte) dashboardAsset {
	sum := sha256.Sum256(body)
	version := hex.EncodeToString(sum[:6])
	ctype := mime.TypeByExtension(path.Ext(name))
	switch path.Ext(name) { // not left to the host's mime.types
	case ".html":
		ctype = "text/html; charset=utf-8"
	case ".js":
		ctype = "text/javascript; charset=utf-8"
	case ".css":
		ctype = "text/css; charset=utf-8"
	case ".svg":
		ctype = "image/svg+xml"
	}
	return dashboardAsset{body: body, contentType: ctype, etag: `"` + version + `"`, version: version}
}

func (d *dashboard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", dashboardCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	switch name, isAsset := strings.CutPrefix(r.URL.Path, "/assets/"); {
	case r.URL.Path == "/":
		// Always revalidated, so a new binary's page (and with it the new
		// asset URLs) is seen at the next load.
		d.serve(w, r, d.page, "no-cache")
	case isAsset && d.assets[name].body != nil:
		a := d.assets[name]
		cache := "no-cache"
		if r.URL.Query().Get("v") == a.version {
			cache = "public, max-age=31536000, immutable"
		}
		d.serve(w, r, a, cache)
	default:
		http.NotFound(w, r)
	}
}

func (d *dashboard) serve(w http.ResponseWriter, r *http.Request, a dashboardAsset, cache string) {
	h := w.Header()
	h.Set("Cache-Control", cache)
	h.Set("ETag", a.etag)
	h.Set("Content-Type", a.contentType)
	// ServeContent answers If-None-Match with 304 and HEAD without a body.
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
}
