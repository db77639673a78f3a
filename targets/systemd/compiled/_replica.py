# Generated from _replica.j2 by `python -m hxpc.compiler.targets.templates`. Do not edit.
SOURCE_SHA256 = '0400b238274c9902a7e5c0f1dd087886acd15bfdd33a67f64c89a6c7334466c5'
JINJA2_VERSION = '3.1.6'
from jinja2.runtime import LoopContext, Macro, Markup, Namespace, TemplateNotFound, TemplateReference, TemplateRuntimeError, Undefined, escape, identity, internalcode, markup_join, missing, str_join
name = '_replica.j2'

def root(context, missing=missing):
    resolve = context.resolve_or_missing
    undefined = environment.undefined
    concat = environment.concat
    cond_expr_undefined = Undefined
    if 0: yield None
    l_0_unit_keys = l_0_service_keys = missing
    pass
    def macro(l_1_replica):
        t_1 = []
        if l_1_replica is missing:
            l_1_replica = undefined("parameter 'replica' was not provided", name='replica')
        pass
        t_1.extend((
            'X-Hxpc-Replica=',
            str(environment.getattr(l_1_replica, 'index')),
            '\n',
        ))
        if environment.getattr(l_1_replica, 'health'):
            pass
            t_1.extend((
                'X-Hxpc-Health=',
                str(environment.getattr(l_1_replica, 'health')),
                '\n',
            ))
        if environment.getattr(l_1_replica, 'metrics'):
            pass
            t_1.extend((
                'X-Hxpc-Metrics=',
                str(environment.getattr(l_1_replica, 'metrics')),
                '\n',
            ))
        return concat(t_1)
    context.exported_vars.add('unit_keys')
    context.vars['unit_keys'] = l_0_unit_keys = Macro(environment, macro, 'unit_keys', ('replica',), False, False, False, context.eval_ctx.autoescape)
    def macro(l_1_replica):
        t_2 = []
        if l_1_replica is missing:
            l_1_replica = undefined("parameter 'replica' was not provided", name='replica')
        pass
        for l_2_assignment in environment.getattr(l_1_replica, 'environment'):
            _loop_vars = {}
            pass
            t_2.extend((
                'Environment=',
                str(l_2_assignment),
                '\n',
            ))
        l_2_assignment = missing
        for l_2_device in environment.getattr(l_1_replica, 'devices'):
            _loop_vars = {}
            pass
            t_2.extend((
                'DeviceAllow=',
                str(l_2_device),
                ' rw\n',
            ))
        l_2_device = missing
        return concat(t_2)
    context.exported_vars.add('service_keys')
    context.vars['service_keys'] = l_0_service_keys = Macro(environment, macro, 'service_keys', ('replica',), False, False, False, context.eval_ctx.autoescape)

blocks = {}
debug_info = '2=12&3=19&4=22&5=26&7=29&8=33&11=39&12=44&13=49&15=53&16=58'
