# bash completion for pmemd(8); installed as /usr/share/bash-completion/completions/pmemd.
# Keep in step with the argparse parser in pmemd/cli.py.

_pmemd()
{
    local cur prev words cword
    if declare -F _init_completion >/dev/null 2>&1; then
        _init_completion -n = || return
    else
        COMPREPLY=()
        cur=${COMP_WORDS[COMP_CWORD]}
        prev=${COMP_WORDS[COMP_CWORD-1]}
        words=("${COMP_WORDS[@]}")
        cword=$COMP_CWORD
    fi

    local commands="validate config plan status apply rollback reset daemon schema"
    local global_opts="--root --config --version --help -h"

    # --root DIR / --config PATH, also as --root=DIR (split at '=' by bash when
    # bash-completion's _init_completion is not available).
    if [[ $prev == = && $cword -ge 2 ]]; then
        prev=${words[cword-2]}
    fi
    case $prev in
        --root)
            compopt -o filenames 2>/dev/null
            COMPREPLY=($(compgen -d -- "$cur"))
            return
            ;;
        --config)
            compopt -o filenames 2>/dev/null
            COMPREPLY=($(compgen -f -- "$cur"))
            return
            ;;
    esac
    case $cur in
        --root=*)
            compopt -o filenames 2>/dev/null
            COMPREPLY=($(compgen -d -P --root= -- "${cur#--root=}"))
            return
            ;;
        --config=*)
            compopt -o filenames 2>/dev/null
            COMPREPLY=($(compgen -f -P --config= -- "${cur#--config=}"))
            return
            ;;
    esac

    # The command is the first word that is neither an option nor an option's argument.
    local i command=""
    for ((i = 1; i < cword; i++)); do
        case ${words[i]} in
            --root | --config)
                if [[ ${words[i+1]:-} == = ]]; then ((i += 2)); else ((i++)); fi
                ;;
            -*) ;;
            *) command=${words[i]}; break ;;
        esac
    done

    if [[ -z $command ]]; then
        if [[ $cur == -* ]]; then
            COMPREPLY=($(compgen -W "$global_opts" -- "$cur"))
        else
            COMPREPLY=($(compgen -W "$commands" -- "$cur"))
        fi
        return
    fi

    local opts="--help"
    case $command in
        config | status | reset | rollback) opts="--json --help" ;;
        plan) opts="--json --dropin --as --help" ;;
        apply) opts="--dry-run --json --retry-trial --help" ;;
        validate) opts="--dropin --as --help" ;;
        daemon | schema) opts="--help" ;;
        *) return ;;
    esac
    # Each option once.
    local w
    opts=" $opts "
    for w in "${words[@]:1:cword-1}"; do
        [[ $w == --* ]] && opts=${opts/ $w / }
    done
    COMPREPLY=($(compgen -W "$opts" -- "$cur"))
} &&
    complete -F _pmemd pmemd

# ex: filetype=sh
