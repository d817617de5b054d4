"""A plugin whose hook returns something that is not a component, and one with a config that is not attrs."""

import mmcore


class NotAttrs:
    pass


@mmcore.hookimpl
def mmcore_encoders():
    return [mmcore.Component("bad_config", NotAttrs, lambda config, context: None)]


@mmcore.hookimpl
def mmcore_evaluators():
    return ["not a component"]
