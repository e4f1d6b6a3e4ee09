%% Integration tests of :global's conflict resolvers when the registered pid is
%% a C worker (issue 12 item 2): three Erlang nodes a, b, c and the cnode
%% program (connected to a). Every name below is held by a C worker; c is cut
%% off, an Erlang process on c takes each name, the partition heals, and global
%% runs the resolver of the C worker's registration on the C node (rpc to
%% node(Pid2)), which has an Erlang node run it. Checked on every node: who
%% keeps the name, and whether the loser was killed or told exactly as
%% global:random_exit_name/3, random_notify_name/3, notify_all_name/3 or the
%% user's fun would do it for an Erlang process. Run twice: with the C node's
%% name sorting above the Erlang nodes' names, and below them (minmax then
%% picks the other winner).
-module(global_resolver_tests).
-include_lib("eunit/include/eunit.hrl").

-export([recorder/0, erl_owner/2, register_user/5, all_agree/1, ask/2]).

-define(KINDS, [default_local, exit_export_beam, exit_c, exit_cache_sup,
                notify_export_beam, notify_c, notify_all_beam, notify_all_c,
                user_pick_c, user_pick_erl, user_crash]).

global_resolver_test_() ->
    [{"C node sorts above the Erlang nodes", order(above)},
     {"C node sorts below the Erlang nodes", order(below)}].

order(Order) ->
    {setup,
     fun() -> C = cnb_cluster:new(), {C, catch conflict_all(C, Order)} end,
     fun({C, _}) -> cnb_cluster:stop(C) end,
     fun({_, R}) ->
             {timeout, 300,
              [{atom_to_list(K), fun() -> check(R, K) end} || K <- ?KINDS]}
     end}.

%%% --------------------------------------------------------------- cluster

%% global_tests' cluster (a, b, c visible, the C node connected to a), with the
%% C node named to sort above or below the Erlang nodes.
cluster(C, Order) ->
    %% Upper-case letters sort below every lower-case one.
    Cl = #{nodes := Ns, cnode := CN} =
        global_tests:cluster(C, case Order of above -> "z"; below -> "A" end),
    case Order of
        above -> true = lists:all(fun({_, N}) -> CN > N end, Ns);
        below -> true = lists:all(fun({_, N}) -> CN < N end, Ns)
    end,
    Cl.

%%% --------------------------------------------------------------- peer side

%% A process that keeps every message it gets; {watch, P, From} monitors P
%% (the DOWN is kept too), {dump, From} hands the messages over.
recorder() ->
    spawn(fun() -> rec_loop([]) end).

rec_loop(Acc) ->
    receive
        {watch, P, From} -> erlang:monitor(process, P), From ! {watching, P}, rec_loop(Acc);
        {dump, From} -> From ! {dump, self(), lists:reverse(Acc)}, rec_loop(Acc);
        M -> rec_loop([M | Acc])
    end.

%% On c during the partition: an Erlang process that registers Name and passes
%% every message it gets to Rec as {e_info, Self, Msg}. Returns {Pid, yes|no}.
erl_owner(Name, Rec) ->
    Self = self(),
    E = spawn(fun() ->
                      R = global:register_name(Name, self()),
                      Self ! {reg, self(), R},
                      e_loop(Rec)
              end),
    receive {reg, E, R} -> {E, R} after 10000 -> {E, timeout} end.

e_loop(Rec) ->
    receive M -> Rec ! {e_info, self(), M}, e_loop(Rec) end.

%% On a: registers Name for W with a user fun made here (a closure over Rec and
%% CN), which tells Rec where it ran and returns the pid Pick asks for.
register_user(Name, W, Pick, CN, Rec) ->
    Fun = fun(N, P1, P2) ->
                  Rec ! {resolver_ran, N, node()},
                  case Pick of
                      crash -> exit({resolver_crash, N});
                      c -> hd([P || P <- [P1, P2], node(P) =:= CN]);
                      erl -> hd([P || P <- [P1, P2], node(P) =/= CN])
                  end
          end,
    global:register_name(Name, W, Fun).

%% On any node: true when every node of the cluster gives the same answer for
%% every name (global has finished resolving).
all_agree(Names) ->
    Nodes = [node() | nodes()],
    lists:all(fun(Name) ->
                      {Rs, []} = rpc:multicall(Nodes, global, whereis_name, [Name]),
                      length(lists:usort(Rs)) =:= 1
              end, Names).

%%% --------------------------------------------------------------- scenario

%% Builds one conflict of each kind in a single partition and heal; returns
%% #{kind => Facts} for check/2.
conflict_all(C, Order) ->
    Cl = #{nodes := [{A, NA}, {B, NB}, {Cc, NC}], cnode := CN, port := Port} = cluster(C, Order),
    RecA = cnb_cluster:call(A, ?MODULE, recorder, []),
    RecC = cnb_cluster:call(Cc, ?MODULE, recorder, []),
    Ws = [{K, make_c_owner(A, CN, RecA, K)} || K <- ?KINDS],
    Names = [Name || {_, {_, Name}} <- Ws],
    [?assertEqual({K, [W, W, W]}, {K, whereis_all(Cl, Name)}) || {K, {W, Name}} <- Ws],
    [watch(A, RecA, W) || {_, {W, _}} <- Ws],
    %% Partition c away from a, b and the C node.
    global_tests:partition(Cc, [NA, NB, CN]),
    true = cnb_cluster:wait_until(
             fun() ->
                     lists:all(fun(Nm) -> cnb_cluster:call(Cc, global, whereis_name, [Nm])
                                              =:= undefined end, Names)
             end, 10000),
    Es = [begin
              {E, yes} = cnb_cluster:call(Cc, ?MODULE, erl_owner, [Name, RecC]),
              watch(Cc, RecC, E),
              {K, E}
          end || {K, {_, Name}} <- Ws],
    %% Heal.
    T0 = erlang:monotonic_time(millisecond),
    pong = cnb_cluster:call(Cc, net_adm, ping, [NA]),
    pong = cnb_cluster:call(Cc, net_adm, ping, [NB]),
    [ok = cnb_cluster:call(P, global, sync, []) || P <- [A, B, Cc]],
    Agreed = cnb_cluster:wait_until(fun() -> cnb_cluster:call(A, ?MODULE, all_agree, [Names])
                                    end, 15000),
    ?debugFmt("~s: ~b names agreed on every node ~b ms after the heal began",
              [Order, length(Names), erlang:monotonic_time(millisecond) - T0]),
    timer:sleep(1000), %% notifications and kills still on their way
    RecordA = dump(A, RecA),
    RecordC = dump(Cc, RecC),
    Out = cnb_cluster:cnode_output(C, Port),
    maps:from_list(
      [begin
           E = proplists:get_value(K, Es),
           {K, #{order => Order, agreed => Agreed, name => Name, w => W, e => E, cn => CN,
                 owners => whereis_all(Cl, Name),
                 w_msgs => lists:usort([M || {probe_info, P, M} <- RecordA, P =:= W]),
                 e_msgs => lists:usort([M || {e_info, P, M} <- RecordC, P =:= E]),
                 w_down => [R || {'DOWN', _, process, P, R} <- RecordA, P =:= W],
                 e_down => [R || {'DOWN', _, process, P, R} <- RecordC, P =:= E],
                 ran => lists:usort([Nd || {resolver_ran, N, Nd} <- RecordA, N =:= Name]),
                 erlang_nodes => [NA, NB, NC],
                 warnings => [L || L <- Out, binary:match(L, <<"[warning]">>) =/= nomatch,
                                   mentions(L, Name)]}}
       end || {K, {W, Name}} <- Ws]).

%% Does the log line L name the term Name (ei prints it with spaces)?
mentions(L, Name) ->
    binary:match(binary:replace(L, <<" ">>, <<>>, [global]),
                 iolist_to_binary(io_lib:format("~w", [Name]))) =/= nomatch.

%% The C worker that holds the name of kind K (registered on a). Returns {W, Name}.
make_c_owner(A, CN, RecA, exit_cache_sup) ->
    Id = erlang:unique_integer([positive]),
    {ok, W} = cnb_cluster:call(A, gen_server, call, [{cache_sup, CN}, {start, Id, Id}, 30000]),
    _ = RecA,
    {W, {cache, Id}};
make_c_owner(A, CN, RecA, K) ->
    {ok, W} = cnb_cluster:call(A, gen_server, call, [{probe, CN}, spawn]),
    ok = cnb_cluster:call(A, gen_server, call, [W, {subscribe, RecA}]),
    Name = {resolver_test, K},
    G = fun(M, F, Args) -> yes = cnb_cluster:call(A, M, F, Args) end,
    Reg = fun(Method) -> yes = cnb_cluster:call(A, gen_server, call,
                                                [W, {global_register, Name, Method}]) end,
    case K of
        default_local -> G(global, register_name, [Name, W]);
        exit_export_beam -> G(global, register_name, [Name, W, fun global:random_exit_name/3]);
        exit_c -> Reg(random_exit);
        notify_export_beam ->
            G(global, register_name, [Name, W, fun global:random_notify_name/3]);
        notify_c -> Reg(random_notify);
        notify_all_beam -> G(global, register_name, [Name, W, fun global:notify_all_name/3]);
        notify_all_c -> Reg(notify_all);
        user_pick_c -> G(?MODULE, register_user, [Name, W, c, CN, RecA]);
        user_pick_erl -> G(?MODULE, register_user, [Name, W, erl, CN, RecA]);
        user_crash -> G(?MODULE, register_user, [Name, W, crash, CN, RecA])
    end,
    {W, Name}.

whereis_all(#{nodes := Ns}, Name) ->
    [cnb_cluster:call(P, global, whereis_name, [Name]) || {P, _} <- Ns].

watch(P, Rec, Pid) -> ok = cnb_cluster:call(P, ?MODULE, ask, [Rec, {watch, Pid}]).

dump(P, Rec) -> cnb_cluster:call(P, ?MODULE, ask, [Rec, dump]).

%% On a peer (the test runner is not a distributed node): asks the recorder.
ask(Rec, {watch, Pid}) ->
    Rec ! {watch, Pid, self()},
    receive {watching, Pid} -> ok after 5000 -> error({no_watch, Pid}) end;
ask(Rec, dump) ->
    Rec ! {dump, self()},
    receive {dump, Rec, Ms} -> Ms after 5000 -> error(no_dump) end.

%%% --------------------------------------------------------------- checks

check({'EXIT', Why}, _K) ->
    error({scenario_failed, Why});
check(R, K) ->
    F = #{order := Order, agreed := Agreed, name := Name, w := W, e := E, cn := CN,
          owners := Owners} = maps:get(K, R),
    ?debugFmt("~s ~p: owners ~p (C worker ~p, Erlang ~p)", [Order, K, Owners, W, E]),
    ?assert(Agreed),
    %% global's minmax: the pid on the node whose name sorts lower wins.
    {Min, Max} = case node(E) < node(W) of true -> {E, W}; false -> {W, E} end,
    %% The run made the order it names: the C worker loses above, wins below.
    ?assertEqual(CN, node(W)),
    ?assertEqual(case Order of above -> W; below -> E end, Max),
    Other = fun(P) -> case P of W -> E; E -> W end end,
    Told = fun(P) -> case P of W -> maps:get(w_msgs, F); E -> maps:get(e_msgs, F) end end,
    Down = fun(P) -> case P of W -> maps:get(w_down, F); E -> maps:get(e_down, F) end end,
    case kind(K) of
        exit ->
            ?assertEqual([Min, Min, Min], Owners),
            ?assertEqual([killed], Down(Max)),
            ?assertEqual([], Down(Min)),
            ?assertEqual({[], []}, {Told(Min), Told(Max)});
        notify ->
            ?assertEqual([Min, Min, Min], Owners),
            ?assertEqual([{global_name_conflict, Name}], Told(Max)),
            ?assertEqual([], Told(Min)),
            ?assertEqual({[], []}, {Down(Min), Down(Max)});
        notify_all ->
            ?assertEqual([undefined, undefined, undefined], Owners),
            [?assertEqual([{global_name_conflict, Name, Other(P)}], Told(P)) || P <- [W, E]],
            ?assertEqual({[], []}, {Down(W), Down(E)});
        {user, Pick} ->
            %% A fun that crashes: resolve_it catches it, rpc:call turns the
            %% {'EXIT', _} into {badrpc, _}, and global keeps the pid of the
            %% other partition (E), telling no one.
            Winner = case Pick of c -> W; erl -> E; crash -> E end,
            ?assertEqual([Winner, Winner, Winner], Owners),
            %% The fun ran on an Erlang node (it cannot run on the C node).
            Ran = maps:get(ran, F),
            ?assertNotEqual([], Ran),
            ?assertEqual([], Ran -- maps:get(erlang_nodes, F)),
            %% global leaves the loser alone: only the fun could act on it.
            ?assertEqual({[], [], [], []}, {Down(W), Down(E), Told(W), Told(E)}),
            case Pick of
                crash ->
                    %% The C node says so at warning level, with the name.
                    ?debugFmt("~s", [maps:get(warnings, F)]),
                    ?assertNotEqual([], maps:get(warnings, F));
                _ -> ok
            end
    end.

kind(K) when K =:= default_local; K =:= exit_export_beam; K =:= exit_c;
             K =:= exit_cache_sup -> exit;
kind(K) when K =:= notify_export_beam; K =:= notify_c -> notify;
kind(K) when K =:= notify_all_beam; K =:= notify_all_c -> notify_all;
kind(user_pick_c) -> {user, c};
kind(user_pick_erl) -> {user, erl};
kind(user_crash) -> {user, crash}.
