//! The media path's own tests (the gateway's side: addresses advertised in candidates).

use super::*;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn advertised_addresses_follow_public_ips_binds_and_interface_filters() {
    let wildcard = addr("0.0.0.0:8189");
    let public: Vec<IpAddr> = vec![
        "203.0.113.7".parse().unwrap(),
        "2001:db8::7".parse().unwrap(),
    ];
    assert_eq!(
        advertised_addrs(wildcard, &public, &[]),
        [addr("203.0.113.7:8189"), addr("[2001:db8::7]:8189")]
    );
    // IPv4 first whatever the order given, otherwise as given.
    let reversed: Vec<IpAddr> = ["2001:db8::7", "203.0.113.9", "2001:db8::8", "203.0.113.7"]
        .iter()
        .map(|ip| ip.parse().unwrap())
        .collect();
    assert_eq!(
        advertised_addrs(wildcard, &reversed, &[]),
        [
            addr("203.0.113.9:8189"),
            addr("203.0.113.7:8189"),
            addr("[2001:db8::7]:8189"),
            addr("[2001:db8::8]:8189")
        ]
    );
    let bound = addr("127.0.0.1:9000");
    assert_eq!(advertised_addrs(bound, &[], &[]), [bound]);
    let lo_only = advertised_addrs(wildcard, &[], &["lo".to_owned()]);
    assert_eq!(lo_only, [addr("127.0.0.1:8189")]);
}
