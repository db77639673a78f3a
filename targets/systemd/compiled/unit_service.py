# Generated from unit.service.j2 by `python -m hxpc.compiler.targets.templates`. Do not edit.
SOURCE_SHA256 = '6f0eec10dff987248ca3cfc2662415ae281bc339d660bdba2f1060ad15158ef9'
JINJA2_VERSION = '3.1.6'
from jinja2.runtime import LoopContext, Macro, Markup, Namespace, TemplateNotFound, TemplateReference, TemplateRuntimeError, Undefined, escape, identity, internalcode, markup_join, missing, str_join
name = 'unit.service.j2'

def root(context, missing=missing):
    resolve = context.resolve_or_missing
    undefined = environment.undefined
    concat = environment.concat
    cond_expr_undefined = Undefined
    if 0: yield None
    l_0_header = resolve('header')
    l_0_notes = resolve('notes')
    l_0_description = resolve('description')
    l_0_wants = resolve('wants')
    l_0_requires = resolve('requires')
    l_0_after = resolve('after')
    l_0_remote = resolve('remote')
    l_0_depends_on = resolve('depends_on')
    l_0_project = resolve('project')
    l_0_env = resolve('env')
    l_0_kind = resolve('kind')
    l_0_name = resolve('name')
    l_0_runtime = resolve('runtime')
    l_0_health_timing = resolve('health_timing')
    l_0_volumes = resolve('volumes')
    l_0_replica = resolve('replica')
    l_0_hash_mark = resolve('hash_mark')
    l_0_service = resolve('service')
    l_0_h = resolve('h')
    l_0_unit_keys = l_0_service_keys = missing
    try:
        t_1 = environment.filters['join']
    except KeyError:
        @internalcode
        def t_1(*unused):
            raise TemplateRuntimeError("No filter named 'join' found.")
    pass
    included_template = environment.get_template('_replica.j2', 'unit.service.j2')._get_default_module(context)
    l_0_unit_keys = getattr(included_template, 'unit_keys', missing)
    if l_0_unit_keys is missing:
        l_0_unit_keys = undefined(f"the template {included_template.__name__!r} (imported on line 1 in 'unit.service.j2') does not export the requested name 'unit_keys'", name='unit_keys')
    l_0_service_keys = getattr(included_template, 'service_keys', missing)
    if l_0_service_keys is missing:
        l_0_service_keys = undefined(f"the template {included_template.__name__!r} (imported on line 1 in 'unit.service.j2') does not export the requested name 'service_keys'", name='service_keys')
    context.vars.update({'unit_keys': l_0_unit_keys, 'service_keys': l_0_service_keys})
    context.exported_vars.difference_update(('unit_keys', 'service_keys'))
    yield str((undefined(name='header') if l_0_header is missing else l_0_header))
    for l_1_note in (undefined(name='notes') if l_0_notes is missing else l_0_notes):
        _loop_vars = {}
        pass
        yield '# '
        yield str(l_1_note)
        yield '\n'
    l_1_note = missing
    yield '\n[Unit]\nDescription='
    yield str((undefined(name='description') if l_0_description is missing else l_0_description))
    yield '\nWants='
    yield str(t_1(context.eval_ctx, (undefined(name='wants') if l_0_wants is missing else l_0_wants), ' '))
    yield '\n'
    if (undefined(name='requires') if l_0_requires is missing else l_0_requires):
        pass
        yield 'Requires='
        yield str(t_1(context.eval_ctx, (undefined(name='requires') if l_0_requires is missing else l_0_requires), ' '))
        yield '\n'
    yield 'After='
    yield str(t_1(context.eval_ctx, (undefined(name='after') if l_0_after is missing else l_0_after), ' '))
    yield '\n'
    for l_1_line in (undefined(name='remote') if l_0_remote is missing else l_0_remote):
        _loop_vars = {}
        pass
        yield '# '
        yield str(l_1_line)
        yield '\n'
    l_1_line = missing
    if (undefined(name='depends_on') if l_0_depends_on is missing else l_0_depends_on):
        pass
        yield 'X-Hxpc-DependsOn='
        yield str((undefined(name='depends_on') if l_0_depends_on is missing else l_0_depends_on))
        yield '\n'
    yield 'X-Hxpc-Project='
    yield str((undefined(name='project') if l_0_project is missing else l_0_project))
    yield '\nX-Hxpc-Env='
    yield str((undefined(name='env') if l_0_env is missing else l_0_env))
    yield '\nX-Hxpc-Kind='
    yield str((undefined(name='kind') if l_0_kind is missing else l_0_kind))
    yield '\nX-Hxpc-Name='
    yield str((undefined(name='name') if l_0_name is missing else l_0_name))
    yield '\nX-Hxpc-Runtime='
    yield str((undefined(name='runtime') if l_0_runtime is missing else l_0_runtime))
    yield '\n'
    for (l_1_key, l_1_value) in (undefined(name='health_timing') if l_0_health_timing is missing else l_0_health_timing):
        _loop_vars = {}
        pass
        yield 'X-Hxpc-Health'
        yield str(l_1_key)
        yield '='
        yield str(l_1_value)
        yield '\n'
    l_1_key = l_1_value = missing
    for l_1_v in (undefined(name='volumes') if l_0_volumes is missing else l_0_volumes):
        _loop_vars = {}
        pass
        yield 'X-Hxpc-Volume='
        yield str(environment.getattr(l_1_v, 'name'))
        yield ' '
        yield str(environment.getattr(l_1_v, 'source'))
        yield ' '
        yield str(environment.getattr(l_1_v, 'target'))
        if environment.getattr(l_1_v, 'size'):
            pass
            yield ' size='
            yield str(environment.getattr(l_1_v, 'size'))
        yield '\n'
    l_1_v = missing
    if (undefined(name='replica') if l_0_replica is missing else l_0_replica):
        pass
        yield str(context.call((undefined(name='unit_keys') if l_0_unit_keys is missing else l_0_unit_keys), (undefined(name='replica') if l_0_replica is missing else l_0_replica)))
    yield str((undefined(name='hash_mark') if l_0_hash_mark is missing else l_0_hash_mark))
    yield '\n\n[Service]\nType='
    yield str(environment.getattr((undefined(name='service') if l_0_service is missing else l_0_service), 'type'))
    yield '\n'
    if (environment.getattr((undefined(name='service') if l_0_service is missing else l_0_service), 'type') == 'notify'):
        pass
        yield 'NotifyAccess=all\n'
    for l_1_assignment in environment.getattr((undefined(name='service') if l_0_service is missing else l_0_service), 'environment'):
        _loop_vars = {}
        pass
        yield 'Environment='
        yield str(l_1_assignment)
        yield '\n'
    l_1_assignment = missing
    if (undefined(name='replica') if l_0_replica is missing else l_0_replica):
        pass
        yield str(context.call((undefined(name='service_keys') if l_0_service_keys is missing else l_0_service_keys), (undefined(name='replica') if l_0_replica is missing else l_0_replica)))
    for l_1_file in environment.getattr((undefined(name='service') if l_0_service is missing else l_0_service), 'env_files'):
        _loop_vars = {}
        pass
        yield '# Secrets: written root-only by `hxpc apply`; values never appear in a unit.\nEnvironmentFile='
        yield str(l_1_file)
        yield '\n'
    l_1_file = missing
    for l_1_v in (undefined(name='volumes') if l_0_volumes is missing else l_0_volumes):
        _loop_vars = {}
        pass
        if environment.getattr(l_1_v, 'size'):
            pass
            yield '# Volume '
            yield str(environment.getattr(l_1_v, 'name'))
            yield ': size '
            yield str(environment.getattr(l_1_v, 'size'))
            yield ' is a capacity note; a bind mount does not enforce it.\n'
    l_1_v = missing
    for l_1_dir in environment.getattr((undefined(name='service') if l_0_service is missing else l_0_service), 'state_dirs'):
        _loop_vars = {}
        pass
        yield 'StateDirectory='
        yield str(l_1_dir)
        yield '\n'
    l_1_dir = missing
    for l_1_dir in environment.getattr((undefined(name='service') if l_0_service is missing else l_0_service), 'cache_dirs'):
        _loop_vars = {}
        pass
        yield 'CacheDirectory='
        yield str(l_1_dir)
        yield '\n'
    l_1_dir = missing
    for l_1_command in environment.getattr((undefined(name='service') if l_0_service is missing else l_0_service), 'exec_start_pre'):
        _loop_vars = {}
        pass
        yield 'ExecStartPre='
        yield str(l_1_command)
        yield '\n'
    l_1_command = missing
    yield 'ExecStart='
    yield str(environment.getattr((undefined(name='service') if l_0_service is missing else l_0_service), 'exec_start'))
    yield '\n'
    for l_1_command in environment.getattr((undefined(name='service') if l_0_service is missing else l_0_service), 'exec_stop'):
        _loop_vars = {}
        pass
        yield 'ExecStop='
        yield str(l_1_command)
        yield '\n'
    l_1_command = missing
    for l_1_command in environment.getattr((undefined(name='service') if l_0_service is missing else l_0_service), 'exec_stop_post'):
        _loop_vars = {}
        pass
        yield 'ExecStopPost='
        yield str(l_1_command)
        yield '\n'
    l_1_command = missing
    yield 'Restart='
    yield str(environment.getattr((undefined(name='service') if l_0_service is missing else l_0_service), 'restart'))
    yield '\nRestartSec=5s\nTimeoutStartSec='
    yield str(environment.getattr((undefined(name='service') if l_0_service is missing else l_0_service), 'timeout_start'))
    yield '\n'
    for l_1_limit in environment.getattr((undefined(name='service') if l_0_service is missing else l_0_service), 'limits'):
        _loop_vars = {}
        pass
        yield str(l_1_limit)
        yield '\n'
    l_1_limit = missing
    if environment.getattr((undefined(name='service') if l_0_service is missing else l_0_service), 'hardening'):
        pass
        l_0_h = environment.getattr((undefined(name='service') if l_0_service is missing else l_0_service), 'hardening')
        context.vars['h'] = l_0_h
        context.exported_vars.add('h')
        for l_1_path in environment.getattr((undefined(name='h') if l_0_h is missing else l_0_h), 'bind_paths'):
            _loop_vars = {}
            pass
            yield 'BindPaths='
            yield str(l_1_path)
            yield '\n'
        l_1_path = missing
        for l_1_path in environment.getattr((undefined(name='h') if l_0_h is missing else l_0_h), 'bind_ro_paths'):
            _loop_vars = {}
            pass
            yield 'BindReadOnlyPaths='
            yield str(l_1_path)
            yield '\n'
        l_1_path = missing
        yield '\n'
        if environment.getattr((undefined(name='h') if l_0_h is missing else l_0_h), 'uid'):
            pass
            yield "# Hardening: the spec's user (security.run_as_user) with no capabilities, a read-only system and a syscall filter.\nUser="
            yield str(environment.getattr((undefined(name='h') if l_0_h is missing else l_0_h), 'uid'))
            yield '\nGroup='
            yield str(environment.getattr((undefined(name='h') if l_0_h is missing else l_0_h), 'gid'))
            yield '\n'
        else:
            pass
            yield '# Hardening: a dynamic user with no capabilities, a read-only system and a syscall filter.\nDynamicUser=yes\nUser='
            yield str(environment.getattr((undefined(name='h') if l_0_h is missing else l_0_h), 'user'))
            yield '\n'
        yield 'CapabilityBoundingSet='
        yield str(environment.getattr((undefined(name='h') if l_0_h is missing else l_0_h), 'caps'))
        yield '\nAmbientCapabilities='
        yield str(environment.getattr((undefined(name='h') if l_0_h is missing else l_0_h), 'caps'))
        yield '\nNoNewPrivileges=yes\nUMask=0077\nProtectSystem=strict\nProtectHome=yes\nPrivateTmp=yes\nPrivateMounts=yes\n'
        if environment.getattr((undefined(name='h') if l_0_h is missing else l_0_h), 'gpu'):
            pass
            yield "# GPUs: /dev stays the host's, closed except the assigned devices and the NVIDIA control nodes.\nPrivateDevices=no\nDevicePolicy=closed\n"
            for l_1_device in environment.getattr((undefined(name='h') if l_0_h is missing else l_0_h), 'control_devices'):
                _loop_vars = {}
                pass
                yield 'DeviceAllow='
                yield str(l_1_device)
                yield ' rw\n'
            l_1_device = missing
        else:
            pass
            yield 'PrivateDevices=yes\nProcSubset=pid\n'
        if environment.getattr((undefined(name='h') if l_0_h is missing else l_0_h), 'private_users'):
            pass
            yield 'PrivateUsers=yes\n'
        yield 'ProtectProc=invisible\nProtectClock=yes\nProtectHostname=yes\nProtectKernelTunables=yes\nProtectKernelModules=yes\nProtectKernelLogs=yes\nProtectControlGroups=yes\nRestrictNamespaces=yes\nRestrictRealtime=yes\nRestrictSUIDSGID=yes\nRemoveIPC=yes\nLockPersonality=yes\n'
        if environment.getattr((undefined(name='h') if l_0_h is missing else l_0_h), 'mdwe'):
            pass
            yield 'MemoryDenyWriteExecute=yes\n'
        else:
            pass
            yield '# MemoryDenyWriteExecute= is off: CUDA, PyTorch and Triton JIT-compile into writable+executable memory.\n'
        yield 'RestrictAddressFamilies='
        yield str(environment.getattr((undefined(name='h') if l_0_h is missing else l_0_h), 'families'))
        yield '\nSystemCallArchitectures=native\nSystemCallFilter=@system-service\nSystemCallFilter=~@privileged\nSystemCallErrorNumber=EPERM\n'
    yield '\n[Install]\nWantedBy=multi-user.target\n'

blocks = {}
debug_info = '1=37&2=46&3=47&4=51&8=55&9=57&10=59&11=62&13=65&14=67&15=71&17=74&18=77&20=80&21=82&22=84&23=86&24=88&25=90&26=94&28=99&29=103&32=114&33=116&35=117&38=119&39=121&42=124&43=128&45=131&46=133&48=134&50=138&52=141&53=144&54=147&57=152&58=156&60=159&61=163&63=166&64=170&66=174&67=176&68=180&70=183&71=187&73=191&75=193&76=195&77=198&79=201&80=203&81=206&82=210&84=213&85=217&88=221&90=224&91=226&95=231&97=234&98=236&105=238&109=241&110=245&116=251&131=255&136=262'
