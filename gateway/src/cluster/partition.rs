//! Which partition a device belongs to, computed exactly as the broker's subject mapping
//! does it: nats-server 2.9's `{{partition(N,1)}}` (`getHashPartition` in
//! `server/accounts.go`) hashes the concatenated wildcard tokens — here the one token,
//! the device id — with 32-bit FNV-1a and takes the hash modulo N.
//!
//! N is fixed for the life of a deployment: changing it re-maps almost every device
//! (plain modulo, not consistent hashing). Partitions move between instances; devices
//! never move between partitions.

/// 32-bit FNV-1a offset basis.
const FNV_OFFSET: u32 = 0x811c_9dc5;
/// 32-bit FNV prime.
const FNV_PRIME: u32 = 0x0100_0193;

/// 32-bit FNV-1a of `bytes` (Go's `hash/fnv.New32a`).
pub fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(FNV_OFFSET, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(FNV_PRIME)
    })
}

/// The partition (0..`partitions`) of `device_id` among `partitions` (at least 1).
pub fn partition_of(device_id: &str, partitions: u32) -> u32 {
    fnv1a32(device_id.as_bytes()) % partitions.max(1)
}

/// The MQTT client id of partition `p`'s persistent session (the same on every instance,
/// so the broker's client-id take-over fences a stale holder).
pub fn client_id(p: u32) -> String {
    format!("gw-p{p}")
}

/// The MQTT filter of partition `p`'s session: every device and message kind of the partition.
pub fn filter(p: u32) -> String {
    format!("{}/{p}/+/+", protocol::topic::ROOT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        // Test vectors of the FNV reference (isthe.com/chongo/tech/comp/fnv), the same Go's hash/fnv passes.
        assert_eq!(fnv1a32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a32(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn partitions_are_the_hash_modulo_n_and_spread_evenly() {
        assert_eq!(partition_of("a", 64), 0xe40c_292c % 64);
        assert_eq!(partition_of("foobar", 100), 0xbf9c_f968 % 100);
        assert_eq!(partition_of("anything", 1), 0);
        assert_eq!(
            partition_of("anything", 0),
            0,
            "0 partitions is treated as 1"
        );
        let mut counts = [0u32; 64];
        for i in 0..64_000 {
            counts[partition_of(&format!("toilet-{i:05}"), 64) as usize] += 1;
        }
        let (min, max) = (counts.iter().min(), counts.iter().max());
        assert!(
            min.is_some_and(|m| *m > 800) && max.is_some_and(|m| *m < 1200),
            "{counts:?}"
        );
        assert_eq!(client_id(7), "gw-p7");
        assert_eq!(filter(7), "fixtures/7/+/+");
    }
}
