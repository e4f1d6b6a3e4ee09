%% @doc Top supervisor of the cnode_bridge application: one transient child per
%% supervised C node (cnode_bridge_cnode), plus those listed to start at boot
%% in the application environment (`cnodes', a list of {Name, Opts}, Opts a
%% map or a keyword list as start_cnode/2 takes them).
-module(cnode_bridge_sup).
-behaviour(supervisor).

-export([start_link/0, init/1]).

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
                || {Name0, Opts0} <- Boot,
                   {ok, Name, Opts} <- [cnode_bridge_opts:normalize(Name0, Opts0)]],
    {ok, {#{strategy => one_for_one, intensity => 10, period => 60}, Children}}.
