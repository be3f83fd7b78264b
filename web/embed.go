// Package web holds the built browser client — the demo editor and the
// dashboard — so that the weft binary can serve it without any files
// beside it. The TypeScript sources live next to this file; `npm run
// build` writes the bundle to dist/, which is committed, so a Go build
// needs no Node toolchain.
package web

import (
	"embed"
	"io/fs"
)

// all: keeps files whose names start with '.' or '_', should the bundler
// ever emit one; the server decides what to publish.
//
//go:embed all:dist
var dist embed.FS

// Dist is the contents of dist/: index.html (the editor, which reads the
// document name from ?doc=), dashboard.html, and their scripts and
// styles, at the root of the FS.
var Dist fs.FS = mustSub(dist, "dist")

func mustSub(fsys fs.FS, dir string) fs.FS {
	sub, err := fs.Sub(fsys, dir)
	if err != nil { // only for an invalid dir name, which "dist" is not
		panic(err)
	}
	return sub
}
