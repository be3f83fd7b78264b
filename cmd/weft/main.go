// Command weft is the weft sync server's single binary. Its subcommands:
//
//	weft serve [flags]   run the sync server (flags also come from WEFT_* env vars)
//	weft load [flags]    load a loopback server with many clients; check convergence
//	weft token [flags]   mint a development token for a server's JWT secret or key
//	weft trace FILE...   replay editing traces and check their final text
//
// Run "weft help" for the list and "weft help CMD" or "weft CMD -h" for one
// subcommand's flags.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
)

// command is one subcommand. run gets the arguments after the subcommand
// name and returns the process exit status.
type command struct {
	name    string
	args    string // argument synopsis for the usage line
	summary string
	flags   func(fs *flag.FlagSet) func(args []string, stdout, stderr io.Writer) int
}

// commands lists the subcommands in the order help shows them. Adding one
// means adding an entry here and a file defining its flags function.
var commands = []command{
	{name: "serve", args: "[flags]", summary: "run the sync server: WebSocket and HTTP API, metrics, health, demo editor", flags: serveFlags},
	{name: "load", args: "[flags]", summary: "run many clients against a loopback server and check they converge with no acknowledged edit lost", flags: loadFlags},
	{name: "token", args: "[flags]", summary: "mint a signed token (JWT) for development and tests", flags: tokenFlags},
	{name: "trace", args: "[-runs N] FILE...", summary: "replay editing traces (JSON or gzip) and report timings as JSON lines", flags: traceFlags},
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches to a subcommand and returns the exit status: 0 on success,
// 1 on failure, 2 on a usage error.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	name, rest := args[0], args[1:]
	switch name {
	case "help", "-h", "-help", "--help":
		if len(rest) > 0 {
			if c := lookup(rest[0]); c != nil {
				fs, _ := newFlagSet(c, stdout)
				fs.Usage()
				return 0
			}
			fmt.Fprintf(stderr, "weft: unknown subcommand %q\n", rest[0])
			usage(stderr)
			return 2
		}
		usage(stdout)
		return 0
	}
	c := lookup(name)
	if c == nil {
		fmt.Fprintf(stderr, "weft: unknown subcommand %q\n", name)
		usage(stderr)
		return 2
	}
	fs, do := newFlagSet(c, stderr)
	if err := fs.Parse(rest); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	return do(fs.Args(), stdout, stderr)
}

func lookup(name string) *command {
	for i := range commands {
		if commands[i].name == name {
			return &commands[i]
		}
	}
	return nil
}

// newFlagSet builds the subcommand's flag set, writing its usage to w.
func newFlagSet(c *command, w io.Writer) (*flag.FlagSet, func(args []string, stdout, stderr io.Writer) int) {
	fs := flag.NewFlagSet("weft "+c.name, flag.ContinueOnError)
	fs.SetOutput(w)
	do := c.flags(fs)
	fs.Usage = func() {
		fmt.Fprintf(w, "usage: weft %s %s\n\n%s\n", c.name, c.args, c.summary)
		var n int
		fs.VisitAll(func(*flag.Flag) { n++ })
		if n > 0 {
			fmt.Fprintf(w, "\nflags:\n")
			fs.PrintDefaults()
		}
	}
	return fs, do
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "usage: weft <command> [flags] [args]\n\ncommands:\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "  %-8s %s\n", "help", "show this list, or a command's flags: weft help <command>")
}
