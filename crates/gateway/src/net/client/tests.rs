use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn ipv6_clients_are_their_64_and_mapped_addresses_ipv4() {
    assert_eq!(client_key(ip("2001:db8:1:2::1")), ip("2001:db8:1:2::"));
    assert_eq!(
        client_key(ip("2001:db8:1:2:ffff::9")),
        client_key(ip("2001:db8:1:2::1"))
    );
    assert_ne!(
        client_key(ip("2001:db8:1:3::1")),
        client_key(ip("2001:db8:1:2::1"))
    );
    assert_eq!(client_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
    assert_eq!(client_key(ip("192.0.2.7")), ip("192.0.2.7"));
}

#[test]
fn slots_are_capped_in_total_and_per_client() {
    let slots = Slots::new(3, 2);
    let a1 = slots.take(ip("10.0.0.1")).unwrap();
    let a2 = slots.take(ip("10.0.0.1")).unwrap();
    assert_eq!(slots.take(ip("10.0.0.1")).unwrap_err(), Refused::PerClient);
    let _b1 = slots.take(ip("10.0.0.2")).unwrap();
    assert_eq!(slots.take(ip("10.0.0.3")).unwrap_err(), Refused::Total);
    drop(a1);
    assert!(
        slots.take(ip("10.0.0.3")).is_ok(),
        "a freed place is reused"
    );
    drop(a2);
    assert_eq!(slots.open(), 1);
    assert_eq!(slots.clients(), 1, "no entry without a place");
}

#[test]
fn a_64_shares_one_share() {
    let slots = Slots::new(100, 2);
    let _x = slots.take(ip("2001:db8::1")).unwrap();
    let _y = slots.take(ip("2001:db8::2")).unwrap();
    assert_eq!(
        slots.take(ip("2001:db8::ffff")).unwrap_err(),
        Refused::PerClient
    );
    assert!(slots.take(ip("2001:db8:0:1::1")).is_ok(), "another /64");
}
