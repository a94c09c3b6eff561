//! The seccomp filter every RUN process gets: Docker's default profile (moby/profiles,
//! `seccomp/default.json`, Apache-2.0, the version of commit cd3bed8) for Docker's default
//! capability set, the one the sandbox grants. Allowed: the profile's unconditional list,
//! `chroot` (CAP_SYS_CHROOT), `socket` for every family but AF_ALG (38) and AF_VSOCK (40),
//! `personality` with the five personas the profile names, `clone` without namespace flags;
//! `clone3` answers ENOSYS (its flags sit behind a pointer a filter cannot read, and libc then
//! falls back to `clone`). Everything else fails with EPERM, as under `docker run`.
//!
//! The rules compile here into one classic BPF program that binary-searches the syscall
//! number (`compile`): the kernel's cost of installing a filter grows with its length, and
//! a chain of every allowed syscall was most of what a small RUN spent in the kernel
//! before its exec. `seccompiler` (rust-vmm, used by Firecracker; pure Rust, no libseccomp
//! to install or link) installs it. Syscall names resolve per architecture through the
//! `syscalls` crate, and a name the architecture lacks is skipped, as libseccomp does.

use std::collections::BTreeMap;
use std::str::FromStr;

use seccompiler::{BpfProgram, sock_filter};

/// Docker's unconditional allow list, with the architecture-specific entries of the profile
/// (names this architecture lacks are skipped).
const ALLOWED: &[&str] = &[
    "_llseek",
    "_newselect",
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "arch_prctl",
    "arm_fadvise64_64",
    "arm_sync_file_range",
    "bind",
    "breakpoint",
    "brk",
    "cacheflush",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "chroot",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "get_robust_list",
    "get_thread_area",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "getxattrat",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "io_setup",
    "io_submit",
    "ioctl",
    "ioprio_get",
    "ioprio_set",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listmount",
    "listxattr",
    "listxattrat",
    "llistxattr",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "modify_ldt",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "mseal",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "process_vm_readv",
    "process_vm_writev",
    "pselect6",
    "pselect6_time64",
    "ptrace",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "removexattrat",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "riscv_flush_icache",
    "riscv_hwprobe",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "set_robust_list",
    "set_thread_area",
    "set_tid_address",
    "set_tls",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "setsid",
    "setsockopt",
    "setuid",
    "setuid32",
    "setxattr",
    "setxattrat",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statmount",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "sync_file_range2",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "uretprobe",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

/// `clone` flags that make namespaces (CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|
/// NEWNET): refused without CAP_SYS_ADMIN, as in the profile.
const CLONE_NAMESPACE_FLAGS: u32 = 0x7E02_0000;
/// Address families the profile refuses: AF_ALG and AF_VSOCK.
const AF_ALG: u32 = 38;
const AF_VSOCK: u32 = 40;
/// Personas the profile allows: PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32, and
/// 0xffffffff (the query).
const PERSONAS: [u32; 5] = [0, 8, 0x20000, 0x20008, 0xffff_ffff];

/// Why the filter could not be built.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SeccompError {
    #[error("seccomp is not supported on {0} by kiln")]
    Arch(&'static str),
    #[error("building the seccomp filter: {0}")]
    Build(String),
}

/// The audit architecture the kernel reports for this process's syscalls (seccomp_data's
/// `arch`; linux/audit.h: the ELF machine, 64-bit, little-endian).
fn audit_arch() -> Result<u32, SeccompError> {
    match std::env::consts::ARCH {
        "x86_64" => Ok(0xC000_003E),
        "aarch64" => Ok(0xC000_00B7),
        "riscv64" => Ok(0xC000_00F3),
        other => Err(SeccompError::Arch(other)),
    }
}

fn nr(name: &str) -> Option<u32> {
    syscalls::Sysno::from_str(name)
        .ok()
        .and_then(|s| u32::try_from(s.id()).ok())
}

/// What the filter answers for a syscall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Allow,
    Errno(u32),
}

impl Verdict {
    fn ret(self) -> u32 {
        match self {
            Verdict::Allow => libc::SECCOMP_RET_ALLOW,
            Verdict::Errno(e) => libc::SECCOMP_RET_ERRNO | (e & libc::SECCOMP_RET_DATA),
        }
    }
}

/// A test of the low 32 bits of a syscall's first argument (unsigned). Every argument
/// tested here is an int (or, for `clone`, flags that all sit in the low half), and the
/// kernel ignores the high half of an int, so testing all 64 bits would let a caller slip
/// past with high bits set.
#[derive(Clone, Copy, Debug)]
enum Arg0 {
    Lt(u32),
    Eq(u32),
    Gt(u32),
    /// `arg & mask == value`.
    MaskedEq {
        mask: u32,
        value: u32,
    },
}

#[cfg(test)]
impl Arg0 {
    /// The test's meaning, which the compiled filter must match.
    fn holds(self, arg: u32) -> bool {
        match self {
            Arg0::Lt(v) => arg < v,
            Arg0::Eq(v) => arg == v,
            Arg0::Gt(v) => arg > v,
            Arg0::MaskedEq { mask, value } => arg & mask == value,
        }
    }
}

/// One syscall's rule: `verdict` when `when` is empty or any of its tests holds, else the
/// filter's default.
struct Rule {
    when: Vec<Arg0>,
    verdict: Verdict,
}

/// Everything the profile does not allow fails with EPERM, as under `docker run`.
const DEFAULT: Verdict = Verdict::Errno(libc::EPERM as u32);

/// Docker's default profile as rules by syscall number.
fn profile() -> BTreeMap<u32, Rule> {
    let always = |verdict| Rule {
        when: Vec::new(),
        verdict,
    };
    let mut rules: BTreeMap<u32, Rule> = ALLOWED
        .iter()
        .filter_map(|name| nr(name))
        .map(|n| (n, always(Verdict::Allow)))
        .collect();
    let args = |when| Rule {
        when,
        verdict: Verdict::Allow,
    };
    if let Some(n) = nr("socket") {
        rules.insert(
            n,
            args(vec![
                Arg0::Lt(AF_ALG),
                Arg0::Eq(AF_ALG + 1),
                Arg0::Gt(AF_VSOCK),
            ]),
        );
    }
    if let Some(n) = nr("personality") {
        rules.insert(n, args(PERSONAS.iter().map(|&p| Arg0::Eq(p)).collect()));
    }
    if let Some(n) = nr("clone") {
        rules.insert(
            n,
            args(vec![Arg0::MaskedEq {
                mask: CLONE_NAMESPACE_FLAGS,
                value: 0,
            }]),
        );
    }
    if let Some(n) = nr("clone3") {
        rules.insert(n, always(Verdict::Errno(libc::ENOSYS as u32)));
    }
    rules
}

/// The filter to install (a list, so that a rule needing a filter of its own can have one;
/// install all of them).
pub(crate) fn default_filters() -> Result<Vec<BpfProgram>, SeccompError> {
    Ok(vec![compile(&profile(), DEFAULT, audit_arch()?)?])
}

// Classic BPF (linux/filter.h, linux/bpf_common.h): class | size | mode / op | source.
/// BPF_LD | BPF_W | BPF_ABS.
const LD_W_ABS: u16 = 0x20;
/// BPF_ALU | BPF_AND | BPF_K.
const ALU_AND_K: u16 = 0x54;
/// BPF_JMP | BPF_JA.
const JMP_JA: u16 = 0x05;
/// BPF_JMP | BPF_JEQ | BPF_K.
const JMP_JEQ_K: u16 = 0x15;
/// BPF_JMP | BPF_JGT | BPF_K.
const JMP_JGT_K: u16 = 0x25;
/// BPF_JMP | BPF_JGE | BPF_K.
const JMP_JGE_K: u16 = 0x35;
/// BPF_RET | BPF_K.
const RET_K: u16 = 0x06;
/// The kernel's limit on a filter's length.
const MAX_LEN: usize = 4096;
/// Offsets in `struct seccomp_data`: the syscall number, the architecture, and the low
/// 32 bits of the first argument.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
const DATA_ARG0_LOW: u32 = if cfg!(target_endian = "little") {
    16
} else {
    20
};

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// What decides the syscalls of one interval of numbers.
#[derive(Clone, Copy)]
enum Leaf<'a> {
    Ret(Verdict),
    Args(&'a Rule),
}

/// Compile `rules` into one filter: after the architecture check (any other kills the
/// process, as seccompiler's filters did), a binary search on the syscall number over the
/// intervals that share an answer, so a syscall takes about log2(intervals) comparisons
/// and the program stays short. A linear chain of the ~350 allowed syscalls was 1,600
/// instructions, and the kernel converts, JITs and (for its per-syscall cache) runs the
/// program for every syscall number on every RUN's install: most of its cost.
fn compile(
    rules: &BTreeMap<u32, Rule>,
    default: Verdict,
    arch: u32,
) -> Result<BpfProgram, SeccompError> {
    let mut leaves: Vec<(u32, Leaf)> = Vec::new();
    fn push<'a>(leaves: &mut Vec<(u32, Leaf<'a>)>, start: u32, leaf: Leaf<'a>) {
        // Intervals are contiguous, so a leaf answering as the one before it extends it.
        if let (Some((_, Leaf::Ret(last))), Leaf::Ret(new)) = (leaves.last(), leaf)
            && *last == new
        {
            return;
        }
        leaves.push((start, leaf));
    }
    let mut next = Some(0u32);
    for (&n, rule) in rules {
        let Some(from) = next else { break };
        if n > from {
            push(&mut leaves, from, Leaf::Ret(default));
        }
        let leaf = match rule.when.is_empty() {
            true => Leaf::Ret(rule.verdict),
            false => Leaf::Args(rule),
        };
        push(&mut leaves, n, leaf);
        next = n.checked_add(1);
    }
    if let Some(from) = next {
        push(&mut leaves, from, Leaf::Ret(default));
    }
    let mut prog = vec![
        stmt(LD_W_ABS, DATA_ARCH),
        jump(JMP_JEQ_K, arch, 1, 0),
        stmt(RET_K, libc::SECCOMP_RET_KILL_PROCESS),
        stmt(LD_W_ABS, DATA_NR),
    ];
    prog.extend(search(&leaves, default)?);
    if prog.len() >= MAX_LEN {
        return Err(SeccompError::Build(format!(
            "{} instructions, more than the kernel takes",
            prog.len()
        )));
    }
    Ok(prog)
}

/// The search over `leaves` (sorted by start, the first starting at or below every number
/// that reaches it), with the syscall number in the accumulator.
fn search(leaves: &[(u32, Leaf)], default: Verdict) -> Result<Vec<sock_filter>, SeccompError> {
    match leaves {
        [] => Ok(vec![stmt(RET_K, default.ret())]),
        [(_, leaf)] => leaf_code(*leaf, default),
        _ => {
            let mid = leaves.len() / 2;
            let (left, right) = (
                search(&leaves[..mid], default)?,
                search(&leaves[mid..], default)?,
            );
            let k = leaves[mid].0;
            let mut out = Vec::with_capacity(left.len() + right.len() + 2);
            match u8::try_from(left.len()) {
                // At or above k: over the left half.
                Ok(skip) => out.push(jump(JMP_JGE_K, k, skip, 0)),
                // Too far for a conditional jump: at or above k, an unconditional one.
                Err(_) => {
                    out.push(jump(JMP_JGE_K, k, 0, 1));
                    out.push(stmt(JMP_JA, left.len() as u32));
                }
            }
            out.extend(left);
            out.extend(right);
            Ok(out)
        }
    }
}

/// The code deciding one interval: its answer, or a rule's tests of the first argument.
fn leaf_code(leaf: Leaf, default: Verdict) -> Result<Vec<sock_filter>, SeccompError> {
    let rule = match leaf {
        Leaf::Ret(v) => return Ok(vec![stmt(RET_K, v.ret())]),
        Leaf::Args(rule) => rule,
    };
    // Each test reloads the argument (a masked test changes the accumulator); a test that
    // holds jumps to the rule's verdict, the last instruction.
    let mut code = Vec::new();
    let mut to_verdict = Vec::new();
    for test in &rule.when {
        code.push(stmt(LD_W_ABS, DATA_ARG0_LOW));
        match *test {
            Arg0::Eq(v) => code.push(jump(JMP_JEQ_K, v, 0, 0)),
            Arg0::Gt(v) => code.push(jump(JMP_JGT_K, v, 0, 0)),
            Arg0::Lt(v) => code.push(jump(JMP_JGE_K, v, 0, 0)),
            Arg0::MaskedEq { mask, value } => {
                code.push(stmt(ALU_AND_K, mask));
                code.push(jump(JMP_JEQ_K, value, 0, 0));
            }
        }
        to_verdict.push((code.len() - 1, matches!(test, Arg0::Lt(_))));
    }
    code.push(stmt(RET_K, default.ret()));
    code.push(stmt(RET_K, rule.verdict.ret()));
    let last = code.len() - 1;
    for (at, on_false) in to_verdict {
        let offset = u8::try_from(last - at - 1)
            .map_err(|_| SeccompError::Build("a rule with too many tests".into()))?;
        // `Lt` is `jge`: the verdict is where it does not jump.
        match on_false {
            true => code[at].jf = offset,
            false => code[at].jt = offset,
        }
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a classic BPF program of the instructions `compile` emits on one
    /// `seccomp_data`, as the kernel would.
    fn run(prog: &[sock_filter], nr: u32, arch: u32, arg0: u64) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_ne_bytes());
        data[4..8].copy_from_slice(&arch.to_ne_bytes());
        data[16..24].copy_from_slice(&arg0.to_ne_bytes());
        let (mut pc, mut a) = (0usize, 0u32);
        loop {
            let i = &prog[pc];
            pc += 1;
            let jump = |cond: bool| if cond { i.jt as usize } else { i.jf as usize };
            match i.code {
                LD_W_ABS => {
                    let at = i.k as usize;
                    a = u32::from_ne_bytes(data[at..at + 4].try_into().unwrap());
                }
                ALU_AND_K => a &= i.k,
                JMP_JA => pc += i.k as usize,
                JMP_JEQ_K => pc += jump(a == i.k),
                JMP_JGT_K => pc += jump(a > i.k),
                JMP_JGE_K => pc += jump(a >= i.k),
                RET_K => return i.k,
                other => panic!("unexpected instruction {other:#x}"),
            }
        }
    }

    /// What the rules say, straight from their definition.
    fn expected(rules: &BTreeMap<u32, Rule>, nr: u32, arg0: u64) -> u32 {
        match rules.get(&nr) {
            Some(r) if r.when.is_empty() || r.when.iter().any(|t| t.holds(arg0 as u32)) => {
                r.verdict.ret()
            }
            _ => DEFAULT.ret(),
        }
    }

    fn arg_values(rules: &BTreeMap<u32, Rule>) -> Vec<u64> {
        let mut values = vec![0, 1, 0xFFFF_FFFF, 1 << 32, u64::MAX];
        for test in rules.values().flat_map(|r| &r.when) {
            let v = match *test {
                Arg0::Lt(v) | Arg0::Eq(v) | Arg0::Gt(v) => v,
                Arg0::MaskedEq { mask, value } => {
                    values.extend([mask as u64, (mask & mask.wrapping_neg()) as u64]);
                    value
                }
            } as u64;
            for x in [v.wrapping_sub(1), v, v + 1] {
                values.extend([x & 0xFFFF_FFFF, x | 0xFFFF_FFFF_0000_0000]);
            }
        }
        values
    }

    #[test]
    fn the_filter_answers_every_syscall_as_the_profile_says() {
        let arch = audit_arch().expect("arch");
        let rules = profile();
        let filters = default_filters().expect("filters");
        assert_eq!(filters.len(), 1);
        let prog = &filters[0];
        // A binary search, not a chain: far below the kernel's 4096-instruction limit.
        assert!(prog.len() < 400, "{} instructions", prog.len());
        let values = arg_values(&rules);
        // Every number a syscall has here and then some, the x32 range and the extremes.
        let numbers = (0..2048).chain([0x4000_0000, 0x4000_0001, 0x4000_0101, u32::MAX]);
        for n in numbers {
            for &arg in &values {
                assert_eq!(
                    run(prog, n, arch, arg),
                    expected(&rules, n, arg),
                    "syscall {n}, arg0 {arg:#x}"
                );
            }
        }
        // Another architecture's syscalls kill the process.
        assert_eq!(run(prog, 0, arch ^ 1, 0), libc::SECCOMP_RET_KILL_PROCESS);
    }

    #[test]
    fn the_profile_answers_as_docker_does() {
        let rules = profile();
        let check = |name: &str, arg: u64, want: u32| {
            let n = nr(name).expect(name);
            assert_eq!(expected(&rules, n, arg), want, "{name}({arg:#x})");
        };
        let (allow, eperm) = (Verdict::Allow.ret(), DEFAULT.ret());
        for name in ["read", "write", "execve", "openat", "mknodat"] {
            check(name, 0, allow);
        }
        // Docker refuses these without extra capabilities.
        for name in [
            "mount",
            "bpf",
            "keyctl",
            "add_key",
            "kexec_load",
            "unshare",
            "setns",
        ] {
            assert!(!ALLOWED.contains(&name), "{name} allowed");
            check(name, 0, eperm);
        }
        check("socket", libc::AF_INET as u64, allow);
        check("socket", AF_ALG as u64, eperm);
        check("socket", AF_VSOCK as u64, eperm);
        check("socket", AF_VSOCK as u64 + 1, allow);
        check("personality", 0x20008, allow);
        check("personality", 0x1, eperm);
        check("clone", libc::SIGCHLD as u64, allow);
        check("clone", libc::CLONE_NEWUSER as u64, eperm);
        check("clone3", 0, Verdict::Errno(libc::ENOSYS as u32).ret());
    }

    #[test]
    fn long_halves_and_many_leaves_still_compile_right() {
        // Every other number allowed: more leaves than a conditional jump can skip.
        let mut rules = BTreeMap::new();
        for n in (0..1200).step_by(2) {
            rules.insert(
                n,
                Rule {
                    when: if n % 10 == 0 {
                        vec![Arg0::Eq(7), Arg0::Lt(3)]
                    } else {
                        Vec::new()
                    },
                    verdict: Verdict::Allow,
                },
            );
        }
        let prog = compile(&rules, DEFAULT, 1).expect("compiles");
        for n in 0..1300 {
            for arg in [0, 2, 3, 7, 8] {
                assert_eq!(run(&prog, n, 1, arg), expected(&rules, n, arg), "{n} {arg}");
            }
        }
    }
}
