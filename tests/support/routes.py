"""The JSON API's routes, for the tests that walk every route: all of the app's but Flask's static route and the
console's, whose blueprint (by name, flowline.console.NAME) has pages, sessions and CSRF of its own."""

from flowline import console


def api_rules(app):
    """Return the url_map rules of ``app``'s JSON API."""
    return [
        rule
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static" and rule.endpoint.partition(".")[0] != console.NAME
    ]
