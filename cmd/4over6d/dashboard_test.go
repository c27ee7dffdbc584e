package main

import (
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func dashboardGet(t *testing.T, method, target string, header http.Header) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(method, target, nil)
	for k, v := range header {
		r.Header[k] = v
	}
	w := httptest.NewRecorder()
	dashboardHandler().ServeHTTP(w, r)
	return w
}

func TestDashboardHandler(t *testing.T) {
	page := dashboardGet(t, "GET", "/", nil)
	version := regexp.MustCompile(`"assets/app\.js\?v=([0-9a-f]{12})"`).FindStringSubmatch(page.Body.String())
	if version == nil {
		t.Fatalf("page does not load assets/app.js with a version:\n%s", page.Body.String())
	}
	tests := []struct {
		name, method, target string
		header               http.Header
		status               int
		ctype, cache         string
		body                 string // a part of it
	}{
		{"page", "GET", "/", nil, 200, "text/html; charset=utf-8", "no-cache", "<title>4over6d</title>"},
		{"page HEAD", "HEAD", "/", nil, 200, "text/html; charset=utf-8", "no-cache", ""},
		{"versioned script", "GET", "/assets/app.js?v=" + version[1], nil, 200, "text/javascript; charset=utf-8",
			"public, max-age=31536000, immutable", "function poll"},
		{"script without version", "GET", "/assets/app.js", nil, 200, "text/javascript; charset=utf-8", "no-cache", "function poll"},
		{"old version", "GET", "/assets/app.js?v=000000000000", nil, 200, "text/javascript; charset=utf-8", "no-cache", ""},
		{"style", "GET", "/assets/style.css", nil, 200, "text/css; charset=utf-8", "no-cache", "prefers-color-scheme"},
		{"icon", "GET", "/assets/icon.svg", nil, 200, "image/svg+xml", "no-cache", "<svg"},
		{"revalidated", "GET", "/assets/app.js", http.Header{"If-None-Match": {`"` + version[1] + `"`}}, 304, "", "no-cache", ""},
		{"unknown asset", "GET", "/assets/nope.js", nil, 404, "text/plain; charset=utf-8", "", ""},
		{"asset directory", "GET", "/assets/", nil, 404, "text/plain; charset=utf-8", "", ""},
		{"page file name", "GET", "/index.html", nil, 404, "text/plain; charset=utf-8", "", ""},
		{"other path", "GET", "/favicon.ico", nil, 404, "text/plain; charset=utf-8", "", ""},
		{"POST", "POST", "/", nil, 405, "text/plain; charset=utf-8", "", ""},
		{"DELETE asset", "DELETE", "/assets/app.js", nil, 405, "text/plain; charset=utf-8", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := dashboardGet(t, tc.method, tc.target, tc.header)
			h := w.Header()
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d", w.Code, tc.status)
			}
			if got := h.Get("Content-Type"); tc.ctype != "" && got != tc.ctype {
				t.Errorf("Content-Type %q, want %q", got, tc.ctype)
			}
			if got := h.Get("Cache-Control"); tc.cache != "" && got != tc.cache {
				t.Errorf("Cache-Control %q, want %q", got, tc.cache)
			}
			if !strings.Contains(w.Body.String(), tc.body) || (tc.method == "HEAD" && w.Body.Len() != 0) {
				t.Errorf("body %.80q, want it to contain %q (and nothing for HEAD)", w.Body.String(), tc.body)
			}
			if tc.status == 405 && h.Get("Allow") != "GET, HEAD" {
				t.Errorf("Allow %q", h.Get("Allow"))
			}
			for k, want := range map[string]string{"Content-Security-Policy": dashboardCSP, "X-Content-Type-Options": "nosniff",
				"X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"} {
				if got := h.Get(k); got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
		})
	}
}

// TestDashboardFilesAreSelfContained checks what the Content-Security-Policy
// relies on and what "works offline" means: no inline script, style or
// event handler, nothing from another origin, and every element the
// script looks up by id is in the page.
func TestDashboardFilesAreSelfContained(t *testing.T) {
	read := func(name string) string {
		b, err := fs.ReadFile(dashboardFiles, "dashboard/"+name)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	page, script, style := read("index.html"), read("app.js"), read("style.css")
	if n := len(page) + len(script) + len(style) + len(read("icon.svg")); n > 64<<10 {
		t.Errorf("dashboard files are %d bytes; keep them small (64 KiB)", n)
	}
	for _, bad := range []*regexp.Regexp{
		regexp.MustCompile(`<script(?:\s[^>]*)?>[^<]`),         // inline script
		regexp.MustCompile(`\sstyle=`),                         // inline style
		regexp.MustCompile(`<style`),                           // style element
		regexp.MustCompile(`\son[a-z]+=`),                      // event handler attribute
		regexp.MustCompile(`(?i)(?:src|href)="(?:https?:)?//`), // another origin
		regexp.MustCompile(`(?i)javascript:`),                  // script URL
	} {
		if m := bad.FindString(page); m != "" {
			t.Errorf("index.html has %q (matched %s)", m, bad)
		}
	}
	for _, tag := range regexp.MustCompile(`<script\b[^>]*>`).FindAllString(page, -1) {
		if !strings.Contains(tag, ` src="assets/`) {
			t.Errorf("index.html has %s: every script must be a file of the page", tag)
		}
	}
	for name, text := range map[string]string{"app.js": script, "style.css": style} {
		for _, m := range regexp.MustCompile(`(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}[^\s'"]*`).FindAllString(text, -1) {
			if m != "http://www.w3.org/2000/svg" {
				t.Errorf("%s refers to %s: the dashboard must work offline", name, m)
			}
		}
		for _, bad := range []string{"@import", "url(", "eval(", "new Function", "innerHTML", "setAttribute('style'"} {
			if strings.Contains(text, bad) {
				t.Errorf("%s uses %s", name, bad)
			}
		}
	}
	for _, m := range regexp.MustCompile(`\$\('([a-z-]+)'\)`).FindAllStringSubmatch(script, -1) {
		if !strings.Contains(page, `id="`+m[1]+`"`) {
			t.Errorf("app.js looks up #%s, which index.html lacks", m[1])
		}
	}
}
