%% @doc Top supervisor of the cnode_bridge application: one transient child per
%% supervised C node (cnode_bridge_cnode), plus those listed to start at boot
%% in the application environment (`cnodes', a list of {Name, Opts}, Opts a
%% map or a keyword list as start_cnode/2 takes them).
-module(cnode_bridge_sup).
-behaviour(supervisor).

-export([start_link/0, init/1]).

-include_lib("kernel/include/logger.hrl").

-spec start_link() -> {ok, pid()} | ignore | {error, term()}.
start_link() ->
    supervisor:start_link({local, ?MODULE}, ?MODULE, []).

-spec init([]) -> {ok, {supervisor:sup_flags(), [supervisor:child_spec()]}}.
init([]) ->
    Boot = application:get_env(cnode_bridge, cnodes, []),
    Children = [#{id => {cnode, cnode_bridge_cnode:node_name(Name, Opts)},
                  start => {cnode_bridge_cnode, start_link, [Name, Opts]},
                  restart => transient,
                  shutdown => 10000,
                  type => worker,
                  modules => [cnode_bridge_cnode]}
                || {Name, Opts} <- boot_list(Boot)],
    {ok, {#{strategy => one_for_one, intensity => 10, period => 60}, Children}}.

%% The boot list's entries as start_cnode/2 reads them; a bad one is logged
%% and left out (the others still start).
boot_list(Boot) when is_list(Boot) ->
    lists:append([boot_entry(E) || E <- Boot]);
boot_list(Boot) ->
    boot_entry(Boot).

boot_entry({Name0, Opts0} = E) ->
    case cnode_bridge_opts:normalize(Name0, Opts0) of
        {ok, Name, Opts} -> [{Name, Opts}];
        {error, Why} -> bad_entry(E, Why)
    end;
boot_entry(E) ->
    bad_entry(E, not_a_pair).

bad_entry(E, Why) ->
    ?LOG_ERROR("cnode_bridge: the boot list's entry ~tp is left out: ~tp", [E, Why]),
    [].
