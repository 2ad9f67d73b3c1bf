//! Signed tokens: each key type, each claim check, rotation, and files that do not load.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use serde_json::{Value, json};

use super::*;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A keys file holding `keys`, and its loaded form.
fn load(keys: Value, audience: Option<&str>) -> (tempfile::NamedTempFile, SignedTokens) {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), json!({ "keys": keys }).to_string()).expect("write keys");
    let tokens = SignedTokens::load(file.path(), audience.map(str::to_owned)).expect("keys load");
    (file, tokens)
}

fn hs_key(kid: &str, secret: &[u8]) -> Value {
    json!({"kty": "oct", "kid": kid, "k": b64(secret)})
}

fn sign_hs(kid: Option<&str>, secret: &[u8], claims: &Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret)).expect("sign")
}

fn publish(sub: &str) -> Value {
    json!({"sub": sub, "scope": "publish", "exp": now() + 60})
}

#[test]
fn an_hs256_token_opens_its_ingest_for_its_scope_only() {
    let (_file, tokens) = load(json!([hs_key("a", SECRET)]), None);
    let token = sign_hs(Some("a"), SECRET, &publish("cam1"));
    assert!(looks_signed(&token));
    assert_eq!(tokens.verify(&token, "cam1", Scope::Publish), Ok(()));
    assert_eq!(
        tokens.verify(&token, "cam2", Scope::Publish),
        Err(Refusal::WrongSubject)
    );
    assert_eq!(
        tokens.verify(&token, "cam1", Scope::View),
        Err(Refusal::WrongScope)
    );
    let view = sign_hs(
        Some("a"),
        SECRET,
        &json!({"sub": "cam1", "scope": "view", "exp": now() + 60}),
    );
    assert_eq!(
        tokens.verify(&view, "cam1", Scope::Publish),
        Err(Refusal::WrongScope),
        "a view token never publishes"
    );
    let both = sign_hs(
        Some("a"),
        SECRET,
        &json!({"sub": "cam1", "scope": "view publish", "exp": now() + 60}),
    );
    assert_eq!(tokens.verify(&both, "cam1", Scope::Publish), Ok(()));
}

#[test]
fn time_audience_key_and_signature_are_checked() {
    let (_file, tokens) = load(json!([hs_key("a", SECRET)]), Some("whipgate-eu"));
    let sign = |claims: Value| sign_hs(Some("a"), SECRET, &claims);
    let expired = sign(json!({"sub": "cam1", "scope": "publish", "exp": now() - 60}));
    assert_eq!(
        tokens.verify(&expired, "cam1", Scope::Publish),
        Err(Refusal::Expired)
    );
    let no_exp = sign(json!({"sub": "cam1", "scope": "publish"}));
    assert_eq!(
        tokens.verify(&no_exp, "cam1", Scope::Publish),
        Err(Refusal::Expired)
    );
    let early =
        sign(json!({"sub": "cam1", "scope": "publish", "exp": now() + 600, "nbf": now() + 300}));
    assert_eq!(
        tokens.verify(&early, "cam1", Scope::Publish),
        Err(Refusal::NotYetValid)
    );
    let other_aud =
        sign(json!({"sub": "cam1", "scope": "publish", "exp": now() + 60, "aud": "whipgate-us"}));
    assert_eq!(
        tokens.verify(&other_aud, "cam1", Scope::Publish),
        Err(Refusal::WrongAudience)
    );
    let ours = sign(
        json!({"sub": "cam1", "scope": "publish", "exp": now() + 60, "aud": ["x", "whipgate-eu"]}),
    );
    assert_eq!(tokens.verify(&ours, "cam1", Scope::Publish), Ok(()));
    let no_scope = sign(json!({"sub": "cam1", "exp": now() + 60}));
    assert_eq!(
        tokens.verify(&no_scope, "cam1", Scope::Publish),
        Err(Refusal::WrongScope)
    );
    let forged = sign_hs(
        Some("a"),
        b"another secret of thirty-two byte",
        &publish("cam1"),
    );
    assert_eq!(
        tokens.verify(&forged, "cam1", Scope::Publish),
        Err(Refusal::BadSignature)
    );
    let unknown = sign_hs(Some("b"), SECRET, &publish("cam1"));
    assert_eq!(
        tokens.verify(&unknown, "cam1", Scope::Publish),
        Err(Refusal::UnknownKey)
    );
    for junk in ["", "a.b", "not a token", "a.b.c", "....."] {
        assert_eq!(
            tokens.verify(junk, "cam1", Scope::Publish),
            Err(Refusal::Malformed),
            "{junk:?}"
        );
    }
}

#[test]
fn a_token_cannot_pick_another_algorithm_than_its_key() {
    // An `oct` key is HS256 only: a token that says HS512 with the same secret is refused.
    let (_file, tokens) = load(json!([hs_key("a", SECRET)]), None);
    let mut header = Header::new(Algorithm::HS512);
    header.kid = Some("a".into());
    let token = jsonwebtoken::encode(&header, &publish("cam1"), &EncodingKey::from_secret(SECRET))
        .expect("sign");
    assert_eq!(
        tokens.verify(&token, "cam1", Scope::Publish),
        Err(Refusal::WrongAlgorithm)
    );
}

#[test]
fn es256_and_eddsa_keys_verify_their_tokens() {
    let rng = SystemRandom::new();
    let ec_pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("P-256 key");
    let ec = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, ec_pkcs8.as_ref(), &rng)
        .expect("P-256 key pair");
    // Uncompressed point: 0x04, X, Y.
    let point = ec.public_key().as_ref();
    let ec_jwk = json!({"kty": "EC", "kid": "ec", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..65])});
    let ed_pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("Ed25519 key");
    let ed = Ed25519KeyPair::from_pkcs8(ed_pkcs8.as_ref()).expect("Ed25519 key pair");
    let ed_jwk =
        json!({"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": b64(ed.public_key().as_ref())});
    let (_file, tokens) = load(json!([ec_jwk, ed_jwk, hs_key("hs", SECRET)]), None);

    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("ec".into());
    let es = jsonwebtoken::encode(
        &header,
        &publish("cam1"),
        &EncodingKey::from_ec_der(ec_pkcs8.as_ref()),
    )
    .expect("sign ES256");
    assert_eq!(tokens.verify(&es, "cam1", Scope::Publish), Ok(()));

    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("ed".into());
    let eddsa = jsonwebtoken::encode(
        &header,
        &publish("cam1"),
        &EncodingKey::from_ed_der(ed_pkcs8.as_ref()),
    )
    .expect("sign EdDSA");
    assert_eq!(tokens.verify(&eddsa, "cam1", Scope::Publish), Ok(()));

    // The EdDSA token presented under the EC key's id: its alg is not that key's.
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("ec".into());
    let swapped = jsonwebtoken::encode(
        &header,
        &publish("cam1"),
        &EncodingKey::from_ed_der(ed_pkcs8.as_ref()),
    )
    .expect("sign");
    assert_eq!(
        tokens.verify(&swapped, "cam1", Scope::Publish),
        Err(Refusal::WrongAlgorithm)
    );
}

#[test]
fn reloading_swaps_the_keys_and_a_bad_file_keeps_them() {
    let (file, tokens) = load(json!([hs_key("old", SECRET)]), None);
    let old = sign_hs(Some("old"), SECRET, &publish("cam1"));
    let new_secret = b"fedcba9876543210fedcba9876543210";
    let new = sign_hs(Some("new"), new_secret, &publish("cam1"));
    assert_eq!(
        tokens.verify(&new, "cam1", Scope::Publish),
        Err(Refusal::UnknownKey)
    );

    std::fs::write(
        file.path(),
        json!({"keys": [hs_key("new", new_secret)]}).to_string(),
    )
    .expect("rotate");
    tokens.reload().expect("reload");
    assert_eq!(tokens.verify(&new, "cam1", Scope::Publish), Ok(()));
    assert_eq!(
        tokens.verify(&old, "cam1", Scope::Publish),
        Err(Refusal::UnknownKey)
    );

    std::fs::write(file.path(), "{ not json").expect("break the file");
    assert!(tokens.reload().is_err());
    assert_eq!(
        tokens.verify(&new, "cam1", Scope::Publish),
        Ok(()),
        "a file that does not load keeps the keys"
    );
}

#[test]
fn files_that_cannot_work_are_refused_naming_the_flag() {
    let refused = |keys: Value| {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), json!({ "keys": keys }).to_string()).expect("write");
        match SignedTokens::load(file.path(), None) {
            Err(Error::Config(msg)) => msg,
            Err(other) => panic!("not a configuration error: {other}"),
            Ok(_) => panic!("loaded"),
        }
    };
    assert!(refused(json!([])).contains("--token-keys-file"));
    assert!(refused(json!([hs_key("a", b"short")])).contains("at least 32 bytes"));
    assert!(
        refused(json!([{"kty": "oct", "k": b64(SECRET)}, {"kty": "oct", "k": b64(SECRET)}]))
            .contains("kid")
    );
    assert!(
        refused(json!([{"kty": "RSA", "kid": "r", "n": "AQAB", "e": "AQAB"}])).contains("only oct")
    );
    let missing = SignedTokens::load(Path::new("/nonexistent/keys.json"), None);
    assert!(matches!(missing, Err(Error::Config(msg)) if msg.contains("--token-keys-file")));
}

#[test]
fn one_key_without_kid_serves_tokens_without_kid() {
    let (_file, tokens) = load(json!([{"kty": "oct", "k": b64(SECRET)}]), None);
    let token = sign_hs(None, SECRET, &publish("cam1"));
    assert_eq!(tokens.verify(&token, "cam1", Scope::Publish), Ok(()));
}
