%% @doc C workers as children of BEAM supervisors. A worker type registered on
%% a C node (`cnb_register_type(Node, "cache_worker", &Ops)' in C) is started
%% with Erlang's own remote spawn: `start_link(CNode, Type, Args)' sends a
%% spawn request for `Type:start/length(Args)' with a link, the C node runs the
%% type's init before it answers, and the result is what a supervisor expects
%% of a start function: `{ok, Pid}' with the caller linked to the C worker,
%% or `{error, Reason}' (init's reason, e.g. `{already_started, Owner}' for a
%% `:global' name that is taken; `notsup' when the C node has no such type;
%% `noconnection' when it cannot be reached). From Elixir:
%% ```
%% alias :cnode_worker, as: CNodeWorker
%% DynamicSupervisor.start_child(CacheSupervisor,
%%     {CNodeWorker, [cnode, :cache_worker, [7, "seven"]]})
%% '''
%% The child then behaves as an Erlang one: a crash is an exit signal that the
%% supervisor restarts it on; `shutdown' ends it with `terminate' run on the C
%% side; `which_children' lists it.
-module(cnode_worker).

-export([start_link/3, child_spec/1]).

%% @doc Starts a C worker of type Type on CNode with Args, linked to the
%% caller; returns once its init has run.
-spec start_link(node(), atom(), list()) -> {ok, pid()} | {error, term()}.
start_link(CNode, Type, Args) when is_atom(CNode), is_atom(Type), is_list(Args) ->
    ReqId = try erlang:spawn_request(CNode, Type, start, Args, [link, cnb_error_reason])
            catch error:badarg -> badarg
            end,
    case ReqId of
        badarg -> {error, badarg};
        _ -> await(ReqId)
    end.

%% The C node sends {cnb_spawn_error, ReqId, Reason} just before a spawn reply
%% `init_failed', over the same connection; the wait only covers a reply taken
%% from the queue first.
await(ReqId) ->
    receive
        {spawn_reply, ReqId, ok, Pid} ->
            {ok, Pid};
        {spawn_reply, ReqId, error, init_failed} ->
            receive
                {cnb_spawn_error, ReqId, Reason} -> {error, Reason}
            after 1000 -> {error, init_failed}
            end;
        {spawn_reply, ReqId, error, Reason} ->
            {error, Reason}
    end.

%% @doc A child spec for `[CNode, Type, Args]', as `{cnode_worker, [CNode,
%% Type, Args]}' in an Elixir child list asks for: a permanent worker
%% started by start_link/3, shut down with `exit(Pid, shutdown)' and 5 s.
-spec child_spec([node() | atom() | list()]) -> supervisor:child_spec().
child_spec([CNode, Type, Args]) ->
    #{id => {?MODULE, Type},
      start => {?MODULE, start_link, [CNode, Type, Args]},
      restart => permanent,
      shutdown => 5000,
      type => worker,
      modules => [?MODULE]}.
