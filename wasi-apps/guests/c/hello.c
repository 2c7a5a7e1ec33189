// hello-c: the C counterpart of the Rust `hello` guest, built with clang for wasm32-wasi
// against wasi-libc (on Debian: `apt-get install clang lld wasi-libc libclang-rt-dev-wasm32`).
// It prints a greeting and its argv; the words `print_envs` (list the environment) and
// `exit:<n>` (exit with status n) switch on extra behaviour, like in the Rust guest.
// wasi-apps/build.rs compiles it only when such a clang is available and skips it otherwise.

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern char **environ;

int main(int argc, char **argv) {
    printf("Hello, wasimoff! This is the hello-c guest.\n");
    printf("argc = %d\n", argc);
    for (int i = 0; i < argc; i++) {
        printf("argv[%d] = %s\n", i, argv[i]);
    }
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "print_envs") == 0) {
            for (char **env = environ; env != NULL && *env != NULL; env++) {
                printf("env %s\n", *env);
            }
        } else if (strncmp(argv[i], "exit:", 5) == 0) {
            fflush(stdout);
            return atoi(argv[i] + 5);
        }
    }
    return 0;
}
