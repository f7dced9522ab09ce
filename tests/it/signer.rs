//! The signer against every case the official signer produced.

use jobwatch::cloud::signer::{RequestToSign, sign};
use serde_json::Value;

fn vectors() -> Vec<Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/signer-vectors.json"
    );
    let text = std::fs::read_to_string(path).expect("signer vectors");
    let doc: Value = serde_json::from_str(&text).expect("vectors are JSON");
    doc["cases"].as_array().expect("cases").clone()
}

fn pairs(value: &Value) -> Vec<(String, String)> {
    match value {
        Value::Array(items) => items
            .iter()
            .map(|kv| {
                (
                    kv[0].as_str().unwrap().to_owned(),
                    kv[1].as_str().unwrap().to_owned(),
                )
            })
            .collect(),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect(),
        _ => panic!("unexpected shape {value}"),
    }
}

#[test]
fn every_official_vector_matches() {
    let cases = vectors();
    assert!(cases.len() >= 5);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let query = pairs(&case["query"]);
        let headers = pairs(&case["headers"]);
        let req = RequestToSign {
            method: case["method"].as_str().unwrap(),
            host: case["host"].as_str().unwrap(),
            path: case["path"].as_str().unwrap(),
            query: &query,
            headers: &headers,
            body: case["body"].as_str().unwrap().as_bytes(),
        };
        let signed = sign(
            &req,
            case["ak"].as_str().unwrap(),
            case["sk"].as_str().unwrap(),
        );
        assert_eq!(
            signed.canonical_request,
            case["canonical_request"].as_str().unwrap(),
            "{name}: canonical request"
        );
        assert_eq!(
            signed.string_to_sign,
            case["string_to_sign"].as_str().unwrap(),
            "{name}: string to sign"
        );
        assert_eq!(
            signed.authorization,
            case["authorization"].as_str().unwrap(),
            "{name}: authorization"
        );
    }
}
