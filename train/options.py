"""Command-line options declared once, as fields of a dataclass: a field's default, help and click type make its
option, so that a setting's default lives in one place (the fit command's settings are RunConfig's fields)."""

import dataclasses

import click


def setting(default=dataclasses.MISSING, flag=None, *, shown=False, **option):
    """A dataclass field that is also an option: `flag` (default: --the-field-name; "--x/--no-x" for a switch),
    click's `help`, `type`, `callback`... in `option`, and whether the option's default is the field's, `shown`
    in --help; otherwise the option is None unless given (the preset, the device or a resumed run decides)."""
    return dataclasses.field(default=default, metadata={"option": dict(option, flag=flag, shown=shown)})


def click_option(field):
    """The click option of a field declared with `setting`; "{default}" in its help stands for the field's default."""
    option = dict(field.metadata["option"])
    flag, shown = option.pop("flag") or "--" + field.name.replace("_", "-"), option.pop("shown")
    if shown:
        option.update(default=field.default, show_default=True)
    elif field.type is bool and "/" not in flag:
        option.update(is_flag=True)
    else:
        option.update(default=None)
    if option.get("help"):
        option["help"] = option["help"].replace("{default}", str(field.default))
    return click.Option([flag, field.name], **option)


def click_options(cls, after=None):
    """The options of `cls`'s settings in the order of its fields, each followed by the options `after` lists for it."""
    after = after or {}
    return [option for field in dataclasses.fields(cls) if "option" in field.metadata
            for option in (click_option(field), *after.get(field.name, ()))]


def given_options(ctx):
    """The names of the options given on the command line (not defaulted)."""
    return {name for name in ctx.params if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE}
