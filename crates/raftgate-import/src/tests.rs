use regex::Regex;
use serde_json::json;

use super::*;

fn version(base_path: &str) -> ApiVersionSpec {
    ApiVersionSpec::new(base_path, Backend::Service("orders-svc".into()))
}

const YAML_30: &str = r#"
openapi: 3.0.3
info: {title: Orders, version: "1"}
servers: [{url: "https://example.com"}]
paths:
  /users:
    summary: the users
    parameters: []
    get:
      responses:
        200: {description: ok}
    post:
      responses:
        201: {description: made}
  /users/{id}:
    x-internal: true
    get:
      parameters:
        - {name: id, in: path, required: true, schema: {type: integer}}
      responses:
        200: {description: ok}
    delete: {responses: {204: {description: gone}}}
  x-extension: {}
"#;

/// What the proxy does with a route's path and rewrite: the upstream path for `request`, or
/// `None` when the route does not match it.
fn upstream_path(route: &RouteSpec, request: &str) -> Option<String> {
    let path = &route.paths[0];
    if let Some(exact) = path.strip_prefix('=') {
        return (exact == request).then(|| route.rewrite.clone().unwrap_or(request.into()));
    }
    let regex = Regex::new(path.strip_prefix('~').expect("a regex")).expect("compiles");
    regex.is_match(request).then(|| match &route.rewrite {
        Some(rewrite) => regex.replace(request, rewrite.as_str()).into_owned(),
        None => request.into(),
    })
}

#[test]
fn a_yaml_30_document_becomes_one_route_per_operation() {
    let import = import(
        "orders",
        "v1",
        &version("/orders/v1"),
        YAML_30.as_bytes(),
        Some("application/yaml"),
    )
    .unwrap();
    assert_eq!(import.format, Format::Yaml);
    assert_eq!(import.document, YAML_30);
    let summary: Vec<(&str, &str, &str, Option<&str>, i32)> = import
        .routes
        .iter()
        .map(|r| {
            (
                r.name.as_str(),
                r.operation.as_str(),
                r.spec.paths[0].as_str(),
                r.spec.rewrite.as_deref(),
                r.spec.priority,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "orders-v1-get-users",
                "paths./users.get",
                "=/orders/v1/users",
                Some("/users"),
                0
            ),
            (
                "orders-v1-post-users",
                "paths./users.post",
                "=/orders/v1/users",
                Some("/users"),
                0
            ),
            (
                "orders-v1-delete-users-id",
                "paths./users/{id}.delete",
                "~^/orders/v1(/users/[^/]+)$",
                Some("${1}"),
                1
            ),
            (
                "orders-v1-get-users-id",
                "paths./users/{id}.get",
                "~^/orders/v1(/users/[^/]+)$",
                Some("${1}"),
                1
            ),
        ]
    );
    for route in &import.routes {
        assert_eq!(route.spec.service, "orders-svc");
        assert_eq!(route.spec.methods.len(), 1);
        assert!(validate::route(&route.spec).is_ok());
    }
    assert_eq!(import.routes[3].spec.methods, ["GET"]);
    let by_id = &import.routes[3].spec;
    for (request, upstream) in [
        ("/orders/v1/users/42", Some("/users/42")),
        ("/orders/v1/users/a.b-c", Some("/users/a.b-c")),
        ("/orders/v1/users/42/posts", None),
        ("/orders/v1/users/", None),
        ("/users/42", None),
        ("/x/orders/v1/users/42", None),
    ] {
        assert_eq!(
            upstream_path(by_id, request).as_deref(),
            upstream,
            "{request}"
        );
    }
    assert_eq!(
        upstream_path(&import.routes[0].spec, "/orders/v1/users").as_deref(),
        Some("/users")
    );
    // The same document gives the same routes.
    let again = routes("orders", "v1", &version("/orders/v1"), &{
        document::parse(Format::Yaml, YAML_30).unwrap()
    })
    .unwrap();
    assert_eq!(again, import.routes);
}

#[test]
fn a_json_31_document_under_the_root_keeps_its_paths() {
    let doc = json!({
        "openapi": "3.1.0",
        "info": {"title": "t", "version": "1"},
        "paths": {
            "/": {"get": {}},
            "/files/{name}.json": {"put": {}},
            "/a/{x}/b": {"get": {}},
            "/a/{y}/{z}": {"get": {}},
            "/my files/ü": {"get": {}},
        },
        "webhooks": {},
    })
    .to_string();
    let import = import("f", "v2", &version("/"), doc.as_bytes(), None).unwrap();
    assert_eq!(import.format, Format::Json);
    let by_name = |name: &str| {
        import
            .routes
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no route {name}: {:?}", import.routes))
    };
    let root = &by_name("f-v2-get-root").spec;
    assert_eq!(
        (root.paths[0].as_str(), root.rewrite.as_deref()),
        ("=/", None)
    );
    let file = &by_name("f-v2-put-files-name-json").spec;
    assert_eq!(file.paths[0], r"~^/files/[^/]+\.json$");
    assert_eq!(file.rewrite, None);
    assert_eq!(
        upstream_path(file, "/files/report.json").as_deref(),
        Some("/files/report.json")
    );
    assert_eq!(upstream_path(file, "/files/a/b.json"), None);
    assert_eq!(by_name("f-v2-get-a-x-b").spec.priority, 2);
    assert_eq!(by_name("f-v2-get-a-y-z").spec.priority, 1);
    let encoded = &by_name("f-v2-get-my-files").spec;
    assert_eq!(encoded.paths[0], "=/my%20files/%C3%BC");
}

#[test]
fn names_that_clash_or_are_too_long_end_with_a_hash() {
    let long = format!("/{}", "segment/".repeat(30));
    let doc = json!({
        "openapi": "3.0.0",
        "paths": {"/users/{id}": {"get": {}}, "/users/id": {"get": {}}, &long: {"get": {}}},
    });
    let made = routes("api", "v1", &version("/api"), &doc).unwrap();
    let names: Vec<&str> = made.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names.len(), 3);
    for name in &names {
        assert!(validate::name("name", name).is_ok(), "{name}");
        assert!(name.len() <= MAX_NAME_LEN, "{name}");
    }
    let hashed_like = Regex::new(r"^api-v1-get-[A-Za-z0-9-]+-[0-9a-f]{8}$").unwrap();
    assert!(names.iter().all(|n| hashed_like.is_match(n)), "{names:?}");
    assert!(names[0].starts_with("api-v1-get-segment-segment"));
    assert_eq!(names[0].len(), MAX_NAME_LEN);
    assert_ne!(names[1], names[2]);
    assert!(names[1].starts_with("api-v1-get-users-id-"));
    let again = routes("api", "v1", &version("/api"), &doc).unwrap();
    assert_eq!(again, made);
}

/// The field of the error importing `doc` (as JSON) under `/api`.
fn field_of(doc: Value) -> String {
    match routes("api", "v1", &version("/api"), &doc) {
        Err(ImportError::Invalid(e)) => e.field,
        other => panic!("expected an invalid field for {doc}, got {other:?}"),
    }
}

#[test]
fn errors_name_the_document_path() {
    let with_paths = |paths: Value| json!({"openapi": "3.1.0", "paths": paths});
    let cases = [
        (
            with_paths(json!({"/users/{id}": {"get": "yes"}})),
            "paths./users/{id}.get",
        ),
        (
            with_paths(json!({"/users/{id}": {"get": []}})),
            "paths./users/{id}.get",
        ),
        (
            with_paths(json!({"/users": {"gett": {}}})),
            "paths./users.gett",
        ),
        (
            with_paths(json!({"/users": {"$ref": "#/x"}})),
            "paths./users.$ref",
        ),
        (with_paths(json!({"/users": []})), "paths./users"),
        (
            with_paths(json!({"/users/{id": {"get": {}}})),
            "paths./users/{id",
        ),
        (
            with_paths(json!({"/users/id}": {"get": {}}})),
            "paths./users/id}",
        ),
        (
            with_paths(json!({"/users/{}": {"get": {}}})),
            "paths./users/{}",
        ),
        (
            with_paths(json!({"/users/{a{b}}": {"get": {}}})),
            "paths./users/{a{b}}",
        ),
        (
            with_paths(json!({"/users/{a/b}": {"get": {}}})),
            "paths./users/{a/b}",
        ),
        (with_paths(json!({"users": {"get": {}}})), "paths.users"),
        (with_paths(json!({"/a/../b": {"get": {}}})), "paths./a/../b"),
        (with_paths(json!({"/a//b": {"get": {}}})), "paths./a//b"),
        (with_paths(json!({})), "paths"),
        (
            with_paths(json!({"/users": {"summary": "no operations"}})),
            "paths",
        ),
        (with_paths(json!([])), "paths"),
        (json!({"openapi": "3.1.0"}), "paths"),
        (json!({"paths": {}}), "openapi"),
        (json!({"swagger": "2.0", "paths": {}}), "openapi"),
        (json!({"openapi": "3.2.0", "paths": {}}), "openapi"),
        (json!({"openapi": "3.1", "paths": {}}), "openapi"),
        (json!({"openapi": "3.1.x", "paths": {}}), "openapi"),
        (json!({"openapi": 3.0, "paths": {}}), "openapi"),
        (json!({"openapi": null, "paths": {}}), "openapi"),
    ];
    for (doc, field) in cases {
        assert_eq!(field_of(doc), field);
    }
    let many: Map<String, Value> = (0..=MAX_OPERATIONS)
        .map(|i| (format!("/p{i}"), json!({"get": {}})))
        .collect();
    assert_eq!(field_of(with_paths(Value::Object(many))), "paths");
}

#[test]
fn what_is_not_a_document_or_not_a_service_is_refused() {
    let v = version("/api");
    assert_eq!(
        import("a", "v", &v, b"\xff\xfe", None),
        Err(ImportError::NotText)
    );
    assert_eq!(
        import("a", "v", &v, b"just a string", None),
        Err(ImportError::NotAMapping)
    );
    assert!(matches!(
        import("a", "v", &v, b"{\"openapi\": ", None),
        Err(ImportError::Syntax {
            format: "application/json",
            ..
        })
    ));
    assert!(matches!(
        import("a", "v", &v, b"openapi: [", Some("text/yaml")),
        Err(ImportError::Syntax {
            format: "application/yaml",
            ..
        })
    ));
    let model = ApiVersionSpec {
        backend: Backend::AiModel("smart".into()),
        ..v
    };
    let refused = import("a", "v", &model, YAML_30.as_bytes(), None).unwrap_err();
    assert_eq!(
        refused,
        ImportError::NotAService {
            api: "a".into(),
            version: "v".into(),
            kind: Kind::AiModel,
            name: "smart".into(),
        }
    );
    assert!(
        refused.to_string().contains("ai_model 'smart'"),
        "{refused}"
    );
}

#[test]
fn templates_split_at_their_parameters() {
    assert_eq!(
        template("/a/{x}.{y}/b").unwrap(),
        [
            Piece::Text("/a/"),
            Piece::Parameter,
            Piece::Text("."),
            Piece::Parameter,
            Piece::Text("/b"),
        ]
    );
    assert_eq!(template("/plain").unwrap(), [Piece::Text("/plain")]);
    for bad in ["/{", "/}", "/{}", "/{a", "/a}", "/{a{b}", "/{a/b}"] {
        assert!(template(bad).is_err(), "{bad}");
    }
    assert_eq!(slug("/users/{id}/posts"), "users-id-posts");
    assert_eq!(slug("/"), "root");
    assert_eq!(slug("/v1.0/über_x"), "v1-0-ber_x");
}
