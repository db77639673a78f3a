# Generated from replica.conf.j2 by `python -m hxpc.compiler.targets.templates`. Do not edit.
SOURCE_SHA256 = 'c883c9b6dd546ffc22b38e386867c90dffe2aede8c538beff4ff90b44dafaac0'
JINJA2_VERSION = '3.1.6'
from jinja2.runtime import LoopContext, Macro, Markup, Namespace, TemplateNotFound, TemplateReference, TemplateRuntimeError, Undefined, escape, identity, internalcode, markup_join, missing, str_join
name = 'replica.conf.j2'

def root(context, missing=missing):
    resolve = context.resolve_or_missing
    undefined = environment.undefined
    concat = environment.concat
    cond_expr_undefined = Undefined
    if 0: yield None
    l_0_header = resolve('header')
    l_0_replica = resolve('replica')
    l_0_name = resolve('name')
    l_0_host = resolve('host')
    l_0_project = resolve('project')
    l_0_env = resolve('env')
    l_0_hash_mark = resolve('hash_mark')
    l_0_unit_keys = l_0_service_keys = missing
    pass
    included_template = environment.get_template('_replica.j2', 'replica.conf.j2')._get_default_module(context)
    l_0_unit_keys = getattr(included_template, 'unit_keys', missing)
    if l_0_unit_keys is missing:
        l_0_unit_keys = undefined(f"the template {included_template.__name__!r} (imported on line 1 in 'replica.conf.j2') does not export the requested name 'unit_keys'", name='unit_keys')
    l_0_service_keys = getattr(included_template, 'service_keys', missing)
    if l_0_service_keys is missing:
        l_0_service_keys = undefined(f"the template {included_template.__name__!r} (imported on line 1 in 'replica.conf.j2') does not export the requested name 'service_keys'", name='service_keys')
    context.vars.update({'unit_keys': l_0_unit_keys, 'service_keys': l_0_service_keys})
    context.exported_vars.difference_update(('unit_keys', 'service_keys'))
    yield str((undefined(name='header') if l_0_header is missing else l_0_header))
    yield '# Replica '
    yield str(environment.getattr((undefined(name='replica') if l_0_replica is missing else l_0_replica), 'index'))
    yield ' of '
    yield str((undefined(name='name') if l_0_name is missing else l_0_name))
    yield ' on '
    yield str((undefined(name='host') if l_0_host is missing else l_0_host))
    yield ': what '
    yield str(environment.getattr((undefined(name='replica') if l_0_replica is missing else l_0_replica), 'unit'))
    yield ' adds to its template.\n\n[Unit]\nX-Hxpc-Project='
    yield str((undefined(name='project') if l_0_project is missing else l_0_project))
    yield '\nX-Hxpc-Env='
    yield str((undefined(name='env') if l_0_env is missing else l_0_env))
    yield '\n'
    yield str(context.call((undefined(name='unit_keys') if l_0_unit_keys is missing else l_0_unit_keys), (undefined(name='replica') if l_0_replica is missing else l_0_replica)))
    yield str((undefined(name='hash_mark') if l_0_hash_mark is missing else l_0_hash_mark))
    yield '\n\n[Service]\n'
    yield str(context.call((undefined(name='service_keys') if l_0_service_keys is missing else l_0_service_keys), (undefined(name='replica') if l_0_replica is missing else l_0_replica)))

blocks = {}
debug_info = '1=19&2=28&3=30&6=38&7=40&8=42&9=43&12=45'
