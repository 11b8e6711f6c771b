//! The one seccomp profile every task runs under, in a container or as a process.
//!
//! ```text
//!  rules() ─┬─ oci()  → the container spec's `linux.seccomp` (libcontainer loads it)
//!           └─ edgerun exec-shim / kernel-exec build the same filter with libseccomp
//!              (node/src/sandbox.rs) before running anything of the task
//! ```
//!
//! Everything is allowed but kernel and namespace administration no task needs (EPERM),
//! `clone` with any `CLONE_NEW*` flag (EPERM: a new user namespace would hand the task
//! capabilities inside it, CAP_NET_ADMIN over a network namespace of its own among them)
//! and `clone3` (ENOSYS, as Docker's default profile does: its flags sit in a struct seccomp
//! cannot read, and glibc falls back to `clone` on ENOSYS, which is then checked).

use serde_json::{json, Value};

/// EPERM: what a refused administration call answers.
pub const EPERM: u32 = 1;
/// ENOSYS: what `clone3` answers, so that libc falls back to `clone`.
pub const ENOSYS: u32 = 38;

/// Syscalls refused outright (EPERM): kernel and namespace administration no task needs.
pub const DENIED_SYSCALLS: &[&str] = &[
    "acct",
    "add_key",
    "adjtimex",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "delete_module",
    "finit_module",
    "init_module",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mount",
    "move_mount",
    "open_by_handle_at",
    "perf_event_open",
    "pivot_root",
    "ptrace",
    "quotactl",
    "reboot",
    "request_key",
    "setns",
    "settimeofday",
    "swapoff",
    "swapon",
    "syslog",
    "umount2",
    "unshare",
    "userfaultfd",
    "fsopen",
    "fsmount",
    "fspick",
    "open_tree",
];

/// The `CLONE_NEW*` flags `clone` may not carry (linux/sched.h). `CLONE_NEWTIME` (0x80) is
/// left out: in `clone`'s flags those bits are the exit signal; only `unshare` and `clone3`
/// take it, and both are refused whole.
pub const CLONE_NAMESPACE_FLAGS: &[(&str, u64)] = &[
    ("CLONE_NEWNS", 0x0002_0000),
    ("CLONE_NEWCGROUP", 0x0200_0000),
    ("CLONE_NEWUTS", 0x0400_0000),
    ("CLONE_NEWIPC", 0x0800_0000),
    ("CLONE_NEWUSER", 0x1000_0000),
    ("CLONE_NEWPID", 0x2000_0000),
    ("CLONE_NEWNET", 0x4000_0000),
];

/// Architectures the filter covers (OCI names). A syscall made through another ABI than
/// these is killed by libseccomp's default bad-architecture action.
pub const ARCHITECTURES: &[&str] = &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_AARCH64"];

/// One refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub syscall: &'static str,
    /// The errno the call fails with.
    pub errno: u32,
    /// Refuse only when every bit of this mask is set in the first argument (`clone`'s
    /// flags are argument 0 on x86_64, i386 and aarch64); `None` = always.
    pub arg0_has: Option<u64>,
}

/// The whole profile: default allow, these refused.
pub fn rules() -> Vec<Rule> {
    let mut r: Vec<Rule> = DENIED_SYSCALLS
        .iter()
        .map(|s| Rule {
            syscall: s,
            errno: EPERM,
            arg0_has: None,
        })
        .collect();
    // One rule per flag: rules for one syscall are alternatives (any match refuses), and a
    // mask that equals the value reads the same under either MASKED_EQ convention (runc's
    // value = mask, libcontainer's valueTwo = mask).
    r.extend(CLONE_NAMESPACE_FLAGS.iter().map(|(_, flag)| Rule {
        syscall: "clone",
        errno: EPERM,
        arg0_has: Some(*flag),
    }));
    r.push(Rule {
        syscall: "clone3",
        errno: ENOSYS,
        arg0_has: None,
    });
    r
}

/// The profile as an OCI runtime spec `linux.seccomp` object.
pub fn oci() -> Value {
    let syscalls: Vec<Value> = rules()
        .into_iter()
        .map(|r| {
            let mut s = json!({
                "names": [r.syscall],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": r.errno,
            });
            if let Some(mask) = r.arg0_has {
                s["args"] = json!([{
                    "index": 0,
                    "value": mask,
                    "valueTwo": mask,
                    "op": "SCMP_CMP_MASKED_EQ",
                }]);
            }
            s
        })
        .collect();
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ARCHITECTURES,
        "syscalls": syscalls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_clones_and_clone3_are_refused_with_the_right_errno() {
        let r = rules();
        let clone: Vec<u64> = r
            .iter()
            .filter(|r| r.syscall == "clone")
            .filter_map(|r| r.arg0_has)
            .collect();
        assert_eq!(clone.len(), 7);
        assert!(clone.contains(&0x1000_0000), "CLONE_NEWUSER");
        assert!(clone.contains(&0x4000_0000), "CLONE_NEWNET");
        assert!(
            !r.iter()
                .any(|r| r.syscall == "clone" && r.arg0_has.is_none()),
            "plain clone (fork, threads) stays allowed"
        );
        assert!(r.contains(&Rule {
            syscall: "clone3",
            errno: ENOSYS,
            arg0_has: None
        }));
        assert!(r
            .iter()
            .any(|r| r.syscall == "unshare" && r.errno == EPERM && r.arg0_has.is_none()));
    }

    #[test]
    fn the_oci_profile_holds_every_rule() {
        let o = oci();
        assert_eq!(o["defaultAction"], "SCMP_ACT_ALLOW");
        let calls = o["syscalls"].as_array().cloned().unwrap_or_default();
        assert_eq!(calls.len(), rules().len());
        let clone3 = calls
            .iter()
            .find(|c| c["names"] == json!(["clone3"]))
            .cloned()
            .unwrap_or_default();
        assert_eq!(clone3["errnoRet"], 38);
        let newuser = calls
            .iter()
            .find(|c| c["names"] == json!(["clone"]) && c["args"][0]["value"] == 0x1000_0000)
            .cloned()
            .unwrap_or_default();
        assert_eq!(newuser["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
        assert_eq!(newuser["args"][0]["valueTwo"], 0x1000_0000);
        assert_eq!(newuser["errnoRet"], 1);
    }
}
