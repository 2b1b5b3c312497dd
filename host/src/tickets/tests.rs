//! Tests of `tickets.rs`.

use super::*;
use std::sync::Barrier;

#[test]
fn a_ticket_opens_with_its_keys_and_not_after_tampering() {
    let keys = TicketKeys::new(TICKET_KEY_ROTATION);
    let ticket = keys.seal(b"state").unwrap();
    assert_eq!(keys.open(&ticket).unwrap(), b"state");
    let mut tampered = ticket.clone();
    *tampered.last_mut().unwrap() ^= 1;
    assert_eq!(keys.open(&tampered), None);
    assert_eq!(
        TicketKeys::new(TICKET_KEY_ROTATION).open(&ticket),
        None,
        "another host's keys"
    );
    assert_eq!(keys.lifetime_seconds(), 12 * 60 * 60);
}

/// The race the hand-written rotator had: many connections sealing at once when the key is due
/// each rotated it, so the previous key (and every ticket sealed with it) was lost at once.
/// One rotation must happen, however many seal together.
#[test]
fn many_seals_at_a_rotation_rotate_once_and_older_tickets_still_open() {
    let keys = Arc::new(TicketKeys::new(Duration::from_secs(1)));
    let rotations_before = rotations();
    let before = keys.seal(b"before the rotation").unwrap();
    // Rotation is due once the clock's second has passed the one it was set for.
    std::thread::sleep(Duration::from_millis(2100));
    let threads = 16;
    let barrier = Arc::new(Barrier::new(threads));
    let sealers: Vec<_> = (0..threads)
        .map(|_| {
            let (keys, barrier) = (keys.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                keys.seal(b"at the rotation").unwrap()
            })
        })
        .collect();
    for sealer in sealers {
        assert!(keys.open(&sealer.join().unwrap()).is_some());
    }
    assert!(rotations() > rotations_before, "the rotation is counted");
    assert_eq!(
        keys.open(&before).as_deref(),
        Some(&b"before the rotation"[..]),
        "the previous key was rotated out twice"
    );
}

fn key_file(name: &str, keys: &[[u8; FILE_KEY_BYTES]]) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "tls-site-ticket-keys-{name}-{}",
        std::process::id()
    ));
    std::fs::write(&path, keys.concat()).unwrap();
    path
}

fn random_key() -> [u8; FILE_KEY_BYTES] {
    let mut key = [0; FILE_KEY_BYTES];
    SystemRandom::new().fill(&mut key).unwrap();
    key
}

/// Replicas reading the same file open each other's tickets; the host's own keys do not.
#[test]
fn two_readers_of_one_file_open_each_others_tickets() {
    let path = key_file("shared", &[random_key(), random_key()]);
    let lifetime = Duration::from_secs(3600);
    let (one, other) = (
        TicketKeys::from_file(&path, lifetime).unwrap(),
        TicketKeys::from_file(&path, lifetime).unwrap(),
    );
    let ticket = one.seal(b"state").unwrap();
    assert_eq!(other.open(&ticket).as_deref(), Some(&b"state"[..]));
    assert_eq!(one.open(&other.seal(b"back").unwrap()).unwrap(), b"back");
    assert_eq!(TicketKeys::new(TICKET_KEY_ROTATION).open(&ticket), None);
    assert_eq!(one.lifetime_seconds(), 3600);
    let mut tampered = ticket.clone();
    *tampered.last_mut().unwrap() ^= 1;
    assert_eq!(other.open(&tampered), None);
}

/// A rotation as the file's format says: a new key in front seals, the old one behind still
/// opens; once the old key is dropped its tickets no longer open.
#[test]
fn a_rotated_file_seals_with_its_first_key_and_opens_with_all() {
    let (old, new) = (random_key(), random_key());
    let path = key_file("rotate", &[old]);
    let keys = TicketKeys::from_file(&path, TICKET_KEY_ROTATION).unwrap();
    let old_ticket = keys.seal(b"old").unwrap();
    assert_eq!(&old_ticket[..KEY_NAME_BYTES], &old[..KEY_NAME_BYTES]);
    assert_eq!(keys.reread().unwrap(), Reread::Unchanged);

    let before = rotations();
    std::fs::write(&path, [new, old].concat()).unwrap();
    assert_eq!(keys.reread().unwrap(), Reread::Rotated { keys: 2 });
    assert!(rotations() > before, "the rotation is counted");
    let new_ticket = keys.seal(b"new").unwrap();
    assert_eq!(&new_ticket[..KEY_NAME_BYTES], &new[..KEY_NAME_BYTES]);
    assert_eq!(keys.open(&old_ticket).unwrap(), b"old");

    std::fs::write(&path, new).unwrap();
    assert_eq!(keys.reread().unwrap(), Reread::Rotated { keys: 1 });
    assert_eq!(keys.open(&old_ticket), None, "its key is gone");
    assert_eq!(keys.open(&new_ticket).unwrap(), b"new");
}

/// Same names, other secrets: other keys, not the same ones.
#[test]
fn a_key_with_the_same_name_and_another_secret_is_another_key() {
    let key = random_key();
    let path = key_file("same-name", &[key]);
    let keys = TicketKeys::from_file(&path, TICKET_KEY_ROTATION).unwrap();
    let ticket = keys.seal(b"state").unwrap();
    let mut other_secret = key;
    other_secret[KEY_NAME_BYTES] ^= 1;
    std::fs::write(&path, other_secret).unwrap();
    assert_eq!(keys.reread().unwrap(), Reread::Rotated { keys: 1 });
    assert_eq!(keys.open(&ticket), None);
}

/// A file that does not parse is refused with what to do, and a re-read of one leaves the
/// keys in use as they were.
#[test]
fn a_bad_file_is_refused_and_a_bad_reread_keeps_the_keys() {
    let key = random_key();
    let path = key_file("bad", &[key]);
    let keys = TicketKeys::from_file(&path, TICKET_KEY_ROTATION).unwrap();
    let ticket = keys.seal(b"state").unwrap();
    for (bytes, says) in [
        (Vec::new(), "0 bytes is not a whole number of 80-byte keys"),
        (
            [&key[..], b"\n"].concat(),
            "81 bytes is not a whole number of 80-byte keys",
        ),
        (
            [key, random_key(), key].concat(),
            "keys 1 and 3 have the same name",
        ),
        (vec![7; FILE_KEY_BYTES * 65], "65 keys; at most 64"),
    ] {
        std::fs::write(&path, &bytes).unwrap();
        let error = keys.reread().unwrap_err().to_string();
        assert!(error.contains(says), "{error}");
        assert!(
            TicketKeys::from_file(&path, TICKET_KEY_ROTATION).is_err(),
            "{says}"
        );
        assert_eq!(keys.open(&ticket).unwrap(), b"state", "{says}");
    }
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(
        keys.reread(),
        Err(TicketKeyError::Unreadable { .. })
    ));
    assert_eq!(
        TicketKeys::new(TICKET_KEY_ROTATION).reread().unwrap(),
        Reread::NotFromFile
    );
}
