//! The cluster crate's tests: the ingress manifests against golden files
//! and JSON schemas, and the crate's layout, in one test binary.

mod ingress_support;

mod ingress_golden;
mod ingress_schema;
mod layout;
