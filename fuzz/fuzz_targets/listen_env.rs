//! The `LISTEN_*` variables: the child's reading (`listen_env`), the
//! supervisor's steps (`listen_pid`, `listen_pidfdid`, `listen_fds`,
//! `listen_fdnames`), and `valid_fd_name`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use supervisor_child::protocol::activation::{self, ListenPid};
use supervisor_child::protocol::valid_fd_name;

fuzz_target!(
    |input: (Option<&str>, Option<&str>, Option<&str>, u32, i32)| {
        let (pid, fds, names, own_pid, count) = input;
        if let Ok(Some(env)) = activation::listen_env(pid, fds, names, own_pid) {
            assert_eq!(pid.and_then(|p| p.parse::<u32>().ok()), Some(own_pid));
            assert!((1..=(i32::MAX - 3) as usize).contains(&env.count));
            if let Some(names) = &env.names {
                assert_eq!(names.len(), env.count);
            }
        }
        if let Ok(ListenPid::Ours) = activation::listen_pid(pid, own_pid) {
            assert!(pid.is_some());
        }
        if let Some(v) = pid {
            let _ = activation::listen_pidfdid(v);
        }
        let n = fds.and_then(|f| activation::listen_fds(f).ok());
        if let Some(n) = n {
            assert!((1..=i32::MAX - 3).contains(&n));
        }
        // A count from the fuzzer too: nothing may be built per fd.
        for count in [n.unwrap_or(1), count] {
            if let Ok(Some(list)) = activation::listen_fdnames(names, count) {
                assert_eq!(i32::try_from(list.len()), Ok(count));
            }
        }
        for name in names.iter().flat_map(|n| n.split(':')) {
            let _ = valid_fd_name(name);
        }
    }
);
