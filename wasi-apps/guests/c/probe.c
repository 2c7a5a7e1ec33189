// wasiprobe-c: the C counterpart of `wasiprobe`. It goes through wasi-libc the way C programs
// do (stdio, POSIX file calls, directories, links, times, the current directory) and prints one
// `<label>: <result>` line per call, in a form that does not depend on the host (no inode
// numbers, descriptor numbers or current times; errors as errno numbers). The differential test
// of `wasimoff-wasi` runs it under wasmtime-wasi and under wasimoff's host and compares the
// lines, the exit status and the tree left behind. It expects `/` preopened and exits with 7.

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void result(const char *label, int ok) {
    if (ok) {
        printf("%s: ok\n", label);
    } else {
        printf("%s: errno %d\n", label, errno);
    }
}

static void number(const char *label, long long value) {
    if (value < 0) {
        printf("%s: errno %d\n", label, errno);
    } else {
        printf("%s: %lld\n", label, value);
    }
}

static void stat_of(const char *label, const char *path, int follow) {
    struct stat st;
    int r = follow ? stat(path, &st) : lstat(path, &st);
    if (r != 0) {
        printf("%s: errno %d\n", label, errno);
        return;
    }
    const char *kind = S_ISREG(st.st_mode)   ? "file"
                       : S_ISDIR(st.st_mode) ? "dir"
                       : S_ISLNK(st.st_mode) ? "link"
                                             : "other";
    // A directory's size depends on the host's file system: left out.
    long long size = S_ISDIR(st.st_mode) ? 0 : (long long)st.st_size;
    printf("%s: %s size %lld nlink %llu\n", label, kind, size, (unsigned long long)st.st_nlink);
}

static void contents(const char *label, const char *path) {
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        printf("%s: errno %d\n", label, errno);
        return;
    }
    char buf[256];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    for (size_t i = 0; i < n; i++) {
        if (buf[i] == '\0') buf[i] = '0';
    }
    buf[n] = '\0';
    printf("%s: \"%s\"\n", label, buf);
}

static int compare(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void list(const char *label, const char *path) {
    DIR *dir = opendir(path);
    if (dir == NULL) {
        printf("%s: errno %d\n", label, errno);
        return;
    }
    char *names[64];
    int count = 0;
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL && count < 64) {
        names[count++] = strdup(entry->d_name);
    }
    closedir(dir);
    qsort(names, count, sizeof names[0], compare);
    printf("%s:", label);
    for (int i = 0; i < count; i++) {
        printf(" %s", names[i]);
        free(names[i]);
    }
    printf("\n");
}

static void files(void) {
    FILE *f = fopen("/c.txt", "w");
    result("fopen w", f != NULL);
    if (f != NULL) {
        fputs("hello from C\n", f);
        number("ftell", ftell(f));
        result("fclose", fclose(f) == 0);
    }
    f = fopen("/c.txt", "a");
    if (f != NULL) {
        fputs("appended\n", f);
        fclose(f);
    }
    contents("after append", "/c.txt");
    f = fopen("/c.txt", "r+");
    if (f != NULL) {
        fseek(f, 6, SEEK_SET);
        fputs("FROM", f);
        number("fseek end", fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1);
        fclose(f);
    }
    contents("after r+", "/c.txt");
    result("fopen r missing", fopen("/missing.txt", "r") != NULL);

    int fd = open("/p.txt", O_CREAT | O_RDWR | O_TRUNC, 0644);
    result("open creat", fd >= 0);
    number("write", write(fd, "0123456789", 10));
    number("lseek set 2", lseek(fd, 2, SEEK_SET));
    char buf[16] = {0};
    number("read 4", read(fd, buf, 4));
    printf("read data: \"%s\"\n", buf);
    number("pwrite", pwrite(fd, "AB", 2, 8));
    memset(buf, 0, sizeof buf);
    number("pread", pread(fd, buf, 5, 6));
    printf("pread data: \"%s\"\n", buf);
    number("lseek past end", lseek(fd, 20, SEEK_SET));
    number("write past end", write(fd, "Z", 1));
    result("ftruncate 12", ftruncate(fd, 12) == 0);
    struct stat st;
    result("fstat", fstat(fd, &st) == 0);
    printf("fstat size: %lld\n", (long long)st.st_size);
    number("lseek negative", lseek(fd, -100, SEEK_SET));
    result("close", close(fd) == 0);
    result("close again", close(fd) == 0);
    contents("p.txt", "/p.txt");
    result("open excl existing", open("/p.txt", O_CREAT | O_EXCL | O_WRONLY, 0644) >= 0);
    result("open directory flag on a file", open("/p.txt", O_RDONLY | O_DIRECTORY) >= 0);
    result("access existing", access("/p.txt", F_OK) == 0);
    result("access missing", access("/none", F_OK) == 0);
}

static void directories(void) {
    result("mkdir d", mkdir("/d", 0755) == 0);
    result("mkdir d again", mkdir("/d", 0755) == 0);
    result("mkdir d/e", mkdir("/d/e", 0755) == 0);
    result("mkdir missing parent", mkdir("/x/y", 0755) == 0);
    FILE *f = fopen("/d/a.txt", "w");
    if (f != NULL) {
        fputs("a", f);
        fclose(f);
    }
    list("readdir d", "/d");
    list("readdir file", "/p.txt");
    result("rmdir not empty", rmdir("/d") == 0);
    result("rmdir a file", rmdir("/p.txt") == 0);
    result("unlink a directory", unlink("/d/e") == 0);
    result("rename file", rename("/p.txt", "/d/p.txt") == 0);
    result("rename missing", rename("/p.txt", "/d/q.txt") == 0);
    result("rename dir into itself", rename("/d", "/d/e/d") == 0);
    result("rename file over dir", rename("/d/a.txt", "/d/e") == 0);
    list("readdir d after renames", "/d");
    result("chdir d", chdir("/d") == 0);
    char cwd[128];
    printf("getcwd: %s\n", getcwd(cwd, sizeof cwd) != NULL ? cwd : "(error)");
    contents("relative read after chdir", "a.txt");
    result("chdir missing", chdir("/none") == 0);
    result("chdir back", chdir("/") == 0);
    stat_of("stat d", "/d", 1);
    stat_of("stat d/a.txt", "/d/a.txt", 1);
    stat_of("stat ..", "/..", 1);
    contents("open ../ above root", "/../d/a.txt");
}

static void links(void) {
    result("symlink", symlink("a.txt", "/d/sl") == 0);
    result("symlink existing", symlink("a.txt", "/d/sl") == 0);
    char target[64] = {0};
    number("readlink", readlink("/d/sl", target, sizeof target - 1));
    printf("readlink target: \"%s\"\n", target);
    number("readlink a file", readlink("/d/a.txt", target, sizeof target - 1));
    stat_of("stat through link", "/d/sl", 1);
    stat_of("lstat link", "/d/sl", 0);
    contents("read through link", "/d/sl");
    result("open nofollow", open("/d/sl", O_RDONLY | O_NOFOLLOW) >= 0);
    result("symlink to directory", symlink("d", "/dl") == 0);
    contents("read through directory link", "/dl/a.txt");
    result("symlink dangling", symlink("nowhere", "/dangling") == 0);
    contents("read dangling", "/dangling");
    result("symlink escaping", symlink("../../outside", "/escape") == 0);
    contents("read escaping", "/escape");
    result("link", link("/d/a.txt", "/d/hard") == 0);
    stat_of("stat hard", "/d/hard", 1);
    FILE *f = fopen("/d/hard", "a");
    if (f != NULL) {
        fputs("+hard", f);
        fclose(f);
    }
    contents("read original after link write", "/d/a.txt");
    result("unlink hard", unlink("/d/hard") == 0);
    stat_of("stat original after unlink", "/d/a.txt", 1);
    result("link a directory", link("/d", "/dhard") == 0);
    result("unlink dangling", unlink("/dangling") == 0);
    result("rmdir a link", rmdir("/dl") == 0);
}

static void times(void) {
    int fd = open("/t.txt", O_CREAT | O_RDWR, 0644);
    struct timespec set[2] = {{1, 500}, {2, 0}};
    result("futimens", futimens(fd, set) == 0);
    struct stat st;
    fstat(fd, &st);
    printf("times: %lld.%09ld %lld.%09ld\n", (long long)st.st_atim.tv_sec, st.st_atim.tv_nsec,
           (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
    struct timespec omit[2] = {{0, UTIME_OMIT}, {3, 0}};
    result("utimensat omit atime", utimensat(AT_FDCWD, "/t.txt", omit, 0) == 0);
    stat("/t.txt", &st);
    printf("times after omit: %lld %lld\n", (long long)st.st_atim.tv_sec,
           (long long)st.st_mtim.tv_sec);
    struct timespec now[2] = {{0, UTIME_NOW}, {0, UTIME_NOW}};
    result("utimensat now", utimensat(AT_FDCWD, "/t.txt", now, 0) == 0);
    stat("/t.txt", &st);
    printf("now is recent: %d\n", st.st_mtim.tv_sec > 1600000000);
    write(fd, "x", 1);
    close(fd);
    struct timespec ts;
    result("clock_gettime realtime", clock_gettime(CLOCK_REALTIME, &ts) == 0);
    result("clock_gettime monotonic", clock_gettime(CLOCK_MONOTONIC, &ts) == 0);
    struct timespec nap = {0, 1000000};
    result("nanosleep", nanosleep(&nap, NULL) == 0);
    unsigned char entropy[16];
    result("getentropy", getentropy(entropy, sizeof entropy) == 0);
}

int main(int argc, char **argv) {
    printf("argc: %d\n", argc);
    for (int i = 0; i < argc; i++) {
        printf("argv %d: %s\n", i, argv[i]);
    }
    files();
    directories();
    links();
    times();
    printf("done\n");
    fflush(stdout);
    return 7;
}
