//! Region → endpoint, as the official SDK's table gives it
//! (`huaweicloudsdkworkspaceapp/v1/region/workspaceapp_region.py`, 3.1.219).

/// `(region id, endpoint)` pairs in the SDK's order.
pub const REGIONS: &[(&str, &str)] = &[
    (
        "cn-north-9",
        "https://appstream.cn-north-9.myhuaweicloud.com",
    ),
    (
        "cn-southwest-2",
        "https://appstream.cn-southwest-2.myhuaweicloud.com",
    ),
    (
        "cn-north-4",
        "https://appstream.cn-north-4.myhuaweicloud.com",
    ),
    ("cn-east-3", "https://appstream.cn-east-3.myhuaweicloud.com"),
    (
        "cn-south-1",
        "https://appstream.cn-south-1.myhuaweicloud.com",
    ),
    (
        "la-south-2",
        "https://workspace.la-south-2.myhuaweicloud.com",
    ),
    (
        "sa-brazil-1",
        "https://workspace.sa-brazil-1.myhuaweicloud.com",
    ),
    (
        "la-north-2",
        "https://workspace.la-north-2.myhuaweicloud.com",
    ),
    (
        "ap-southeast-3",
        "https://workspace.ap-southeast-3.myhuaweicloud.com",
    ),
    (
        "ap-southeast-1",
        "https://workspace.ap-southeast-1.myhuaweicloud.com",
    ),
    ("cn-east-5", "https://workspace.cn-east-5.myhuaweicloud.com"),
    ("me-east-1", "https://workspace.me-east-1.myhuaweicloud.com"),
    (
        "af-south-1",
        "https://workspace.af-south-1.myhuaweicloud.com",
    ),
    ("tr-west-1", "https://workspace.tr-west-1.myhuaweicloud.com"),
    (
        "cn-north-11",
        "https://workspace.cn-north-11.myhuaweicloud.com",
    ),
    (
        "af-north-1",
        "https://workspace.af-north-1.myhuaweicloud.com",
    ),
    (
        "ap-southeast-2",
        "https://workspace.ap-southeast-2.myhuaweicloud.com",
    ),
];

/// The Workspace application endpoint of a region, if the SDK knows it.
pub fn endpoint_for(region: &str) -> Option<&'static str> {
    REGIONS
        .iter()
        .find(|(id, _)| *id == region)
        .map(|(_, endpoint)| *endpoint)
}

/// The IAM endpoint of a region, as the SDK derives it.
pub fn iam_endpoint_for(region: &str) -> String {
    format!("https://iam.{region}.myhuaweicloud.com")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_examples() {
        assert_eq!(
            endpoint_for("cn-north-4"),
            Some("https://appstream.cn-north-4.myhuaweicloud.com")
        );
        assert_eq!(
            endpoint_for("ap-southeast-1"),
            Some("https://workspace.ap-southeast-1.myhuaweicloud.com")
        );
        assert_eq!(endpoint_for("mars-1"), None);
    }
}
