"""The scoring API's HTTP layer: schemas, errors, middleware, dependencies and one router per resource."""
