//! Parsing a JWKS file (RFC 7517) into verification keys. We read the JSON
//! ourselves rather than through `jsonwebtoken::jwk` so that each key's type
//! and curve are known exactly (that crate's EC keys do not remember their
//! curve) and so that every problem is reported with the key it concerns.
//!
//! Refused outright (config error): invalid JSON, private key material,
//! symmetric keys, malformed RSA/EC/OKP keys (including an RSA modulus or
//! exponent aws-lc-rs would refuse and an EC point off its curve), an `alg`
//! that does not fit the key, duplicate kids, no usable key at all. Skipped with a warning: keys
//! not meant for signatures (`use`, `key_ops`, an encryption `alg`) and key
//! types or curves we do not support, so that an identity provider's JWKS
//! that also lists such keys still loads.

use std::path::Path;
use std::str::FromStr;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use super::keys::{KeyKind, VerifyKey};
use super::signature::SigKey;
use crate::config::ConfigError;

/// base64url as RFC 7517 requires (unpadded), tolerating padding that some
/// tools add anyway.
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// RSA moduli outside 2048..=8192 bits are refused at load time, so that a
/// weak key is a config error rather than a signature failure later.
const RSA_MIN_BYTES: usize = 256;
const RSA_MAX_BYTES: usize = 1024;

enum Parsed {
    Key(VerifyKey),
    Skip(&'static str),
}

/// Parses a JWKS document. Errors name the file, and the line for JSON
/// syntax errors.
pub(crate) fn parse_jwks(path: &Path, bytes: &[u8]) -> Result<Vec<VerifyKey>, ConfigError> {
    let doc: Value = serde_json::from_slice(bytes).map_err(|e| json_error(path, &e))?;
    let Some(list) = doc.get("keys").and_then(Value::as_array) else {
        return Err(ConfigError::new(
            path,
            None,
            "a JWKS must be a JSON object with a \"keys\" array",
        ));
    };
    let mut keys: Vec<VerifyKey> = Vec::new();
    for (i, jwk) in list.iter().enumerate() {
        let label = key_label(i, jwk);
        match parse_jwk(jwk).map_err(|m| ConfigError::new(path, None, format!("{label}: {m}")))? {
            Parsed::Key(key) => {
                if key.kid.is_some() && keys.iter().any(|k| k.kid == key.kid) {
                    return Err(ConfigError::new(
                        path,
                        None,
                        format!("{label}: duplicate kid"),
                    ));
                }
                keys.push(key);
            }
            Parsed::Skip(why) => {
                tracing::warn!(file = %path.display(), key = %label, "JWKS key skipped: {why}");
            }
        }
    }
    if keys.is_empty() {
        return Err(ConfigError::new(
            path,
            None,
            "no usable signature key (RSA, EC P-256/P-384 or Ed25519)",
        ));
    }
    Ok(keys)
}

fn json_error(path: &Path, e: &serde_json::Error) -> ConfigError {
    let line = u32::try_from(e.line()).ok().filter(|l| *l > 0);
    // serde_json appends " at line L column C"; the line goes in its own field.
    let text = e.to_string();
    let message = text.split(" at line ").next().unwrap_or(&text);
    ConfigError::new(path, line, format!("invalid JSON: {message}"))
}

fn key_label(index: usize, jwk: &Value) -> String {
    match jwk.get("kid").and_then(Value::as_str) {
        Some(kid) => format!("keys[{index}] (kid {kid:?})"),
        None => format!("keys[{index}]"),
    }
}

fn parse_jwk(jwk: &Value) -> Result<Parsed, String> {
    let Some(obj) = jwk.as_object() else {
        return Err("not a JSON object".into());
    };
    if obj.contains_key("d") {
        return Err("holds private key material (\"d\"); publish public keys only".into());
    }
    if let Some(why) = not_for_signatures(obj)? {
        return Ok(Parsed::Skip(why));
    }
    let alg = match opt_str(obj, "alg")? {
        None => None,
        Some(name) => match Algorithm::from_str(name) {
            Ok(alg) => Some(alg),
            Err(_) => return Ok(Parsed::Skip("its alg is not a JWS signature algorithm")),
        },
    };
    let kid = opt_str(obj, "kid")?.map(str::to_string);
    let Some((kind, key)) = key_material(obj, alg)? else {
        return Ok(Parsed::Skip("unsupported key type or curve"));
    };
    if let Some(alg) = alg.filter(|a| !kind.fits(*a)) {
        return Err(format!("alg {alg:?} cannot be used with a {kind} key"));
    }
    Ok(Parsed::Key(VerifyKey {
        kid,
        kind,
        alg,
        key,
    }))
}

fn not_for_signatures(obj: &Map<String, Value>) -> Result<Option<&'static str>, String> {
    if opt_str(obj, "use")?.is_some_and(|u| u != "sig") {
        return Ok(Some("its use is not \"sig\""));
    }
    match obj.get("key_ops") {
        None => Ok(None),
        Some(Value::Array(ops)) if ops.iter().any(|op| op == "verify") => Ok(None),
        Some(Value::Array(_)) => Ok(Some("its key_ops lack \"verify\"")),
        Some(_) => Err("key_ops must be an array".into()),
    }
}

/// The key's type and its prepared material. An RSA key whose JWK names an
/// `alg` is prepared for that algorithm only (it may verify no other).
fn key_material(
    obj: &Map<String, Value>,
    alg: Option<Algorithm>,
) -> Result<Option<(KeyKind, SigKey)>, String> {
    match req_str(obj, "kty")? {
        "RSA" => rsa_key(obj, alg).map(Some),
        "EC" => ec_key(obj),
        "OKP" => okp_key(obj),
        "oct" => Err(
            "symmetric keys (kty \"oct\") are not accepted in a JWKS; use jwt.hs256_secret_file"
                .into(),
        ),
        _ => Ok(None),
    }
}

fn rsa_key(obj: &Map<String, Value>, alg: Option<Algorithm>) -> Result<(KeyKind, SigKey), String> {
    let n = b64_member(obj, "n")?;
    let e = b64_member(obj, "e")?;
    let (n, e) = (strip_leading_zeros(&n), strip_leading_zeros(&e));
    if n.len() < RSA_MIN_BYTES {
        return Err("RSA modulus is shorter than 2048 bits".into());
    }
    if n.len() > RSA_MAX_BYTES {
        return Err("RSA modulus is longer than 8192 bits".into());
    }
    // What aws-lc-rs would otherwise refuse only when a token names the key
    // (every signature then failing): an even modulus cannot be a product of
    // two odd primes, an even exponent or 1 is no RSA exponent, and an
    // exponent beyond 33 bits is refused as a denial-of-service guard.
    if n.last().is_none_or(|b| b & 1 == 0) {
        return Err("RSA modulus is even".into());
    }
    match e {
        [] | [1] => return Err("RSA exponent must be at least 3".into()),
        _ if e.last().is_some_and(|b| b & 1 == 0) => return Err("RSA exponent must be odd".into()),
        _ if e.len() > 5 || (e.len() == 5 && e[0] > 1) => {
            return Err("RSA exponent is longer than 33 bits".into())
        }
        _ => {}
    }
    // An `alg` that does not fit an RSA key is refused by the caller.
    let only = alg.filter(|a| KeyKind::Rsa.fits(*a));
    Ok((KeyKind::Rsa, SigKey::rsa(n, e, only)?))
}

fn ec_key(obj: &Map<String, Value>) -> Result<Option<(KeyKind, SigKey)>, String> {
    let (kind, alg, len) = match req_str(obj, "crv")? {
        "P-256" => (KeyKind::EcP256, Algorithm::ES256, 32),
        "P-384" => (KeyKind::EcP384, Algorithm::ES384, 48),
        _ => return Ok(None),
    };
    let x = b64_member(obj, "x")?;
    let y = b64_member(obj, "y")?;
    if x.len() != len || y.len() != len {
        return Err(format!("x and y of a {kind} key must be {len} bytes each"));
    }
    // The verifier takes the uncompressed SEC1 point: 0x04 || x || y.
    let mut point = Vec::with_capacity(1 + 2 * len);
    point.push(0x04);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    Ok(Some((kind, SigKey::ec(alg, &point)?)))
}

fn okp_key(obj: &Map<String, Value>) -> Result<Option<(KeyKind, SigKey)>, String> {
    if req_str(obj, "crv")? != "Ed25519" {
        return Ok(None);
    }
    let x = b64_member(obj, "x")?;
    if x.len() != 32 {
        return Err("x of an Ed25519 key must be 32 bytes".into());
    }
    Ok(Some((KeyKind::Ed25519, SigKey::ed25519(&x)?)))
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

fn opt_str<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, String> {
    match obj.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("{name} must be a string")),
    }
}

fn req_str<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<&'a str, String> {
    opt_str(obj, name)?.ok_or_else(|| format!("{name} is missing"))
}

fn b64_member(obj: &Map<String, Value>, name: &str) -> Result<Vec<u8>, String> {
    B64URL
        .decode(req_str(obj, name)?)
        .map_err(|_| format!("{name} is not base64url"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b64(bytes: &[u8]) -> String {
        B64URL.encode(bytes)
    }

    fn rsa(kid: &str) -> Value {
        let mut n = vec![0xC5; 256];
        n[255] = 0x01;
        json!({"kty": "RSA", "kid": kid, "n": b64(&n), "e": "AQAB"})
    }

    /// A real point of the curve when `len` fits it (keys are parsed on
    /// load, so a made-up point is refused), made-up bytes otherwise.
    fn ec(kid: &str, crv: &str, len: usize) -> Value {
        use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair as _};
        use aws_lc_rs::signature::{
            ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING,
        };
        let alg = match (crv, len) {
            ("P-256", 32) => Some(&ECDSA_P256_SHA256_FIXED_SIGNING),
            ("P-384", 48) => Some(&ECDSA_P384_SHA384_FIXED_SIGNING),
            _ => None,
        };
        let point = match alg {
            Some(alg) => EcdsaKeyPair::generate(alg)
                .unwrap()
                .public_key()
                .as_ref()
                .to_vec(),
            None => [vec![4], vec![1; len], vec![2; len]].concat(),
        };
        let (x, y) = point[1..].split_at(len);
        json!({"kty": "EC", "kid": kid, "crv": crv, "x": b64(x), "y": b64(y)})
    }

    fn parse(keys: Vec<Value>) -> Result<Vec<VerifyKey>, ConfigError> {
        let doc = json!({ "keys": keys }).to_string();
        parse_jwks(Path::new("jwks.json"), doc.as_bytes())
    }

    fn err(keys: Vec<Value>) -> String {
        parse(keys).err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn loads_supported_kinds() {
        let okp = json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&[7; 32]), "alg": "EdDSA"});
        let keys = parse(vec![
            rsa("r"),
            ec("p256", "P-256", 32),
            ec("p384", "P-384", 48),
            okp,
        ])
        .unwrap();
        let kinds: Vec<_> = keys.iter().map(|k| k.kind).collect();
        assert_eq!(
            kinds,
            [
                KeyKind::Rsa,
                KeyKind::EcP256,
                KeyKind::EcP384,
                KeyKind::Ed25519
            ]
        );
        assert_eq!(keys[3].alg, Some(Algorithm::EdDSA));
        assert_eq!(keys[3].kid, None);
    }

    #[test]
    fn skips_keys_not_for_signatures() {
        let mut enc = rsa("enc");
        enc["use"] = json!("enc");
        let mut oaep = rsa("oaep");
        oaep["alg"] = json!("RSA-OAEP");
        let mut sign_only = rsa("signer");
        sign_only["key_ops"] = json!(["sign"]);
        let p521 = ec("p521", "P-521", 66);
        let keys = parse(vec![enc, oaep, sign_only, p521, rsa("ok")]).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("ok"));
    }

    #[test]
    fn refusals_name_the_file_and_key() {
        let mut private = rsa("priv");
        private["d"] = json!("AQAB");
        assert!(err(vec![private]).contains("jwks.json: keys[0] (kid \"priv\"): holds private"));
        let oct = json!({"kty": "oct", "k": b64(&[1; 32])});
        assert!(err(vec![oct]).contains("hs256_secret_file"));
        assert!(err(vec![rsa("a"), rsa("a")]).contains("keys[1] (kid \"a\"): duplicate kid"));
        let small = json!({"kty": "RSA", "n": b64(&[0xFF; 128]), "e": "AQAB"});
        assert!(err(vec![small]).contains("shorter than 2048 bits"));
        let with_e = |e: &[u8]| {
            let mut k = rsa("e");
            k["e"] = json!(b64(e));
            err(vec![k])
        };
        assert!(with_e(&[1]).contains("at least 3"));
        assert!(
            with_e(&[0, 1]).contains("at least 3"),
            "leading zeros do not count"
        );
        assert!(with_e(&[1, 0, 0]).contains("must be odd"));
        assert!(with_e(&[2, 0, 0, 0, 1]).contains("33 bits"));
        assert_eq!(with_e(&[1, 0, 0, 0, 1]), "", "2^32 + 1 fits in 33 bits");
        assert_eq!(with_e(&[3]), "");
        let mut even = rsa("even");
        let mut n = vec![0xC5; 256];
        n[255] = 0x02;
        even["n"] = json!(b64(&n));
        assert!(err(vec![even]).contains("modulus is even"));
        assert!(err(vec![ec("short", "P-256", 31)]).contains("32 bytes"));
        let mut off_curve = ec("off", "P-256", 32);
        off_curve["y"] = json!(b64(&[2; 32]));
        assert!(err(vec![off_curve]).contains("keys[0] (kid \"off\"): x and y are not a point"));
        let mut mism = ec("m", "P-256", 32);
        mism["alg"] = json!("ES384");
        assert!(err(vec![mism]).contains("ES384 cannot be used with a EC P-256 key"));
        let mut hs = rsa("hs");
        hs["alg"] = json!("HS256");
        assert!(err(vec![hs]).contains("HS256 cannot be used"));
        assert!(err(vec![]).contains("no usable signature key"));
        assert!(err(vec![json!({"kid": "x"})]).contains("kty is missing"));
    }

    #[test]
    fn json_errors_carry_the_line() {
        let text = "{\n  \"keys\": [\n    {,\n  ]\n}\n";
        let e = parse_jwks(Path::new("k.json"), text.as_bytes()).unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.to_string().starts_with("k.json:3: invalid JSON: "), "{e}");
        assert!(!e.message.contains(" at line "), "{e}");
        let e = parse_jwks(Path::new("k.json"), b"[1]").unwrap_err();
        assert!(e.message.contains("\"keys\" array"), "{e}");
    }
}
