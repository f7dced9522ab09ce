//! Region → endpoint table (SPEC §1). A minimal placeholder: the lead
//! replaces it with the official SDK's full table at merge.

/// The Workspace endpoint of a region, if known.
pub fn endpoint_for(region: &str) -> Option<&'static str> {
    match region {
        "cn-north-4" => Some("https://appstream.cn-north-4.myhuaweicloud.com"),
        "ap-southeast-1" => Some("https://workspace.ap-southeast-1.myhuaweicloud.com"),
        _ => None,
    }
}

/// The IAM endpoint of a region (for password authentication).
pub fn iam_endpoint_for(region: &str) -> String {
    format!("https://iam.{region}.myhuaweicloud.com")
}
