/* steptrace: runs a command under ptrace, single-stepping it and every descendant that
 * runs a given binary, and appends to OUT the offset (from that binary's load address)
 * of each instruction executed in it, once each, in the order first executed.
 *
 * Used by scripts/hot-symbols to find the functions the runtime's commands execute
 * (the set is exact: no sampling). It is slow (about a second per 10,000
 * instructions): a tool for maintainers, not for the test suite.
 *
 *   steptrace OUT BINARY-NAME COMMAND [ARGS...]
 *
 * A process is followed while a mapping whose path contains BINARY-NAME is executable
 * in it; after an exec into anything else it is detached and runs at full speed. When
 * COMMAND exits, what it left running (a created container's init, waiting for
 * `start`) is detached too and goes on untraced. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

struct proc {
    pid_t pid;
    uint64_t base, lo, hi; /* load address, executable range */
};

static struct proc *procs;
static size_t nprocs, capprocs;
static uint64_t *seen; /* open-addressing set of offset + 1 */
static size_t seencap = 1u << 22, nseen;
static FILE *out;
static const char *needle;

static struct proc *find(pid_t pid) {
    for (size_t i = 0; i < nprocs; i++)
        if (procs[i].pid == pid)
            return &procs[i];
    return NULL;
}

static struct proc *add_proc(pid_t pid) {
    if (nprocs == capprocs) {
        capprocs = capprocs ? 2 * capprocs : 64;
        procs = realloc(procs, capprocs * sizeof *procs);
        if (!procs) {
            perror("steptrace: realloc");
            exit(1);
        }
    }
    struct proc *p = &procs[nprocs++];
    memset(p, 0, sizeof *p);
    p->pid = pid;
    return p;
}

/* Reads where the binary is mapped in the process; leaves the range empty if not. */
static void load_maps(struct proc *p) {
    char path[64], line[4096];
    snprintf(path, sizeof path, "/proc/%d/maps", p->pid);
    p->base = p->lo = p->hi = 0;
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    while (fgets(line, sizeof line, f)) {
        unsigned long a, b, off;
        char perm[8], name[4096] = "";
        if (sscanf(line, "%lx-%lx %7s %lx %*s %*s %4095s", &a, &b, perm, &off, name) < 4)
            continue;
        if (!strstr(name, needle))
            continue;
        if (off == 0 && !p->base)
            p->base = a;
        if (perm[2] == 'x') {
            p->lo = a;
            p->hi = b;
        }
    }
    fclose(f);
    if (!p->base)
        p->lo = p->hi = 0;
}

static void record(uint64_t off) {
    size_t h = (size_t)((off * 0x9E3779B97F4A7C15ull) >> 40) & (seencap - 1);
    while (seen[h]) {
        if (seen[h] == off + 1)
            return;
        h = (h + 1) & (seencap - 1);
    }
    seen[h] = off + 1;
    if (++nseen > seencap / 2) {
        fprintf(stderr, "steptrace: too many distinct instructions\n");
        exit(1);
    }
    fprintf(out, "%lx\n", (unsigned long)off);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: steptrace OUT BINARY-NAME COMMAND [ARGS...]\n");
        return 2;
    }
    out = fopen(argv[1], "a");
    if (!out) {
        perror(argv[1]);
        return 1;
    }
    needle = argv[2];
    seen = calloc(seencap, sizeof *seen);
    if (!seen) {
        perror("steptrace: calloc");
        return 1;
    }
    pid_t child = fork();
    if (child < 0) {
        perror("steptrace: fork");
        return 1;
    }
    if (child == 0) {
        ptrace(PTRACE_TRACEME, 0, 0, 0);
        raise(SIGSTOP);
        execvp(argv[3], argv + 3);
        perror(argv[3]);
        _exit(127);
    }
    int st;
    if (waitpid(child, &st, 0) < 0) {
        perror("steptrace: waitpid");
        return 1;
    }
    ptrace(PTRACE_SETOPTIONS, child, 0,
           PTRACE_O_TRACECLONE | PTRACE_O_TRACEFORK | PTRACE_O_TRACEVFORK |
               PTRACE_O_TRACEEXEC | PTRACE_O_EXITKILL);
    add_proc(child); /* not the binary yet: the exec event loads its maps */
    ptrace(PTRACE_SINGLESTEP, child, 0, 0);
    int code = 1, finishing = 0;
    size_t live = 1;
    while (live > 0) {
        pid_t pid = waitpid(-1, &st, __WALL);
        if (pid < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        struct proc *p = find(pid);
        if (WIFEXITED(st) || WIFSIGNALED(st)) {
            if (p) {
                p->pid = -1;
                live--;
            }
            if (pid == child) {
                code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
                /* Stop the rest so that they can be detached at their next stop. */
                finishing = 1;
                for (size_t i = 0; i < nprocs; i++)
                    if (procs[i].pid > 0)
                        kill(procs[i].pid, SIGSTOP);
            }
            continue;
        }
        if (!WIFSTOPPED(st))
            continue;
        if (!p) {
            /* A new child reported before its parent's clone event. */
            p = add_proc(pid);
            load_maps(p);
            live++;
        }
        if (finishing) {
            /* SIGCONT also discards the SIGSTOP above if it is still pending. */
            ptrace(PTRACE_DETACH, pid, 0, 0);
            kill(pid, SIGCONT);
            p->pid = -1;
            live--;
            continue;
        }
        int sig = WSTOPSIG(st), event = st >> 16, inject = 0;
        if (event == PTRACE_EVENT_CLONE || event == PTRACE_EVENT_FORK ||
            event == PTRACE_EVENT_VFORK) {
            unsigned long np = 0;
            ptrace(PTRACE_GETEVENTMSG, pid, 0, &np);
            if (!find((pid_t)np)) {
                struct proc *c = add_proc((pid_t)np);
                p = find(pid); /* add_proc may have moved the table */
                c->base = p->base;
                c->lo = p->lo;
                c->hi = p->hi;
                live++;
            }
        } else if (event == PTRACE_EVENT_EXEC) {
            load_maps(p);
            if (!p->hi) {
                ptrace(PTRACE_DETACH, pid, 0, 0);
                p->pid = -1;
                live--;
                continue;
            }
        } else if (event != 0) {
            /* other ptrace stops: resume */
        } else if (sig == SIGTRAP) {
            struct user_regs_struct r;
            if (ptrace(PTRACE_GETREGS, pid, 0, &r) == 0 && r.rip >= p->lo && r.rip < p->hi)
                record(r.rip - p->base);
        } else if (sig != SIGSTOP) {
            inject = sig;
        }
        ptrace(PTRACE_SINGLESTEP, pid, 0, inject);
    }
    fclose(out);
    fprintf(stderr, "steptrace: %zu distinct instructions\n", nseen);
    return code;
}
