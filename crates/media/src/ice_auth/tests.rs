use super::*;
use crate::fuzz::binding_request as request;

fn check(packet: &[u8], pwd: &str) -> Result<String, DropReason> {
    let provider = rtc::crypto::default_provider().unwrap();
    let mut req = parse(packet)?.ok_or(DropReason::Malformed)?;
    verify(&mut req, pwd.as_bytes(), provider.crypto())?;
    Ok(req.ufrag)
}

#[test]
fn only_checks_signed_with_the_session_password_verify() {
    let provider = rtc::crypto::default_provider().unwrap();
    let c = provider.crypto();
    let pwd = "0123456789abcdefghijkl";
    let valid = request("ours:theirs", Some(pwd), true, c);
    assert_eq!(check(&valid, pwd).as_deref(), Ok("ours"));
    let wrong_pwd = request("ours:theirs", Some("not the password at all"), true, c);
    assert_eq!(check(&wrong_pwd, pwd), Err(DropReason::Unauthenticated));
    let no_integrity = request("ours:theirs", None, true, c);
    assert_eq!(check(&no_integrity, pwd), Err(DropReason::Unauthenticated));
    let no_fingerprint = request("ours:theirs", Some(pwd), false, c);
    assert_eq!(
        check(&no_fingerprint, pwd),
        Err(DropReason::Unauthenticated)
    );
    let mut bad_fingerprint = valid.clone();
    let last = bad_fingerprint.len() - 1;
    bad_fingerprint[last] ^= 1;
    assert_eq!(
        check(&bad_fingerprint, pwd),
        Err(DropReason::Unauthenticated)
    );
    // The ufrag is covered by the HMAC: swapping it breaks the integrity.
    let mut other_ufrag = valid.clone();
    let at = other_ufrag.windows(4).position(|w| w == b"ours").unwrap();
    other_ufrag[at] = b'x';
    assert!(check(&other_ufrag, pwd).is_err());
    assert_eq!(
        check(&request("nocolon", Some(pwd), true, c), pwd),
        Err(DropReason::Malformed)
    );
}

#[test]
fn mutated_requests_never_panic_the_verifier() {
    let provider = rtc::crypto::default_provider().unwrap();
    let valid = request(
        "abcd:wxyz",
        Some("pwdpwdpwdpwdpwdpwdpwdp"),
        true,
        provider.crypto(),
    );
    let mut x: u64 = 1;
    for _ in 0..20_000 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut packet = valid.clone();
        let at = (x >> 33) as usize % packet.len();
        packet[at] ^= (x >> 13) as u8;
        packet.truncate(((x >> 40) as usize % (packet.len() + 1)).max(1));
        if let Ok(Some(mut req)) = parse(&packet) {
            let _ = verify(&mut req, b"pwdpwdpwdpwdpwdpwdpwdp", provider.crypto());
        }
    }
}
