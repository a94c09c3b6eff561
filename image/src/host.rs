//! What the process kiln runs in may do to a filesystem: facts about the host. Read each
//! time they are asked for, never cached: kiln changes its own user namespace at start.

/// True when this process is in the initial user namespace (its uid map is the identity
/// over the whole ID range). Elsewhere, a rootless kiln or kiln in a container, the kernel
/// refuses to make device nodes, so unpacking skips them (as moby and containers/storage
/// do) and the layer blob keeps them. An unreadable map counts as not initial.
pub fn in_initial_user_namespace() -> bool {
    std::fs::read_to_string("/proc/self/uid_map")
        .map(|m| is_identity_map(&m))
        .unwrap_or(false)
}

fn is_identity_map(map: &str) -> bool {
    map.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_full_identity_map_is_the_initial_namespace() {
        assert!(is_identity_map("         0          0 4294967295\n"));
        assert!(!is_identity_map("         0       1000          1\n"));
        assert!(!is_identity_map("0 0 4294967295\n1 1 1\n"));
        assert!(!is_identity_map(""));
    }
}
