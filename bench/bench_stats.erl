%% bench_stats: the arithmetic and bookkeeping every comparison of `make bench`
%% shares: medians and percentiles of samples, running the C side and the BEAM
%% side of a figure in alternating rounds (so load that comes and goes on a
%% shared machine falls on both sides alike), and the machine the run was on.
-module(bench_stats).
-export([median/1, percentile/2, alternate/3, figure_lines/4, machine/0]).

%% The middle sample; the mean of the two middle ones for an even count.
-spec median([number()]) -> number().
median(Xs) ->
    S = lists:sort(Xs),
    N = length(S),
    case N rem 2 of
        1 -> lists:nth(N div 2 + 1, S);
        0 -> (lists:nth(N div 2, S) + lists:nth(N div 2 + 1, S)) / 2
    end.

%% The P-th percentile (nearest rank) of a non-empty list of samples.
-spec percentile([number()], number()) -> number().
percentile(Xs, P) ->
    S = lists:sort(Xs),
    N = length(S),
    lists:nth(max(1, min(N, ceil(P * N / 100))), S).

%% Runs C() and B() alternately, Rounds times each, C first in odd rounds and
%% B first in even ones (C, B, B, C, C, B, ...: neither side always follows the
%% other); each returns a map of metric => value. Returns, per metric, the list
%% of the C values and the list of the BEAM values, in round order.
-spec alternate(pos_integer(), fun(() -> map()), fun(() -> map())) ->
          #{term() => {[number()], [number()]}}.
alternate(Rounds, C, B) ->
    Results = [case I rem 2 of
                   1 -> Rc = C(), {Rc, B()};
                   0 -> Rb = B(), {C(), Rb}
               end || I <- lists:seq(1, Rounds)],
    Keys = maps:keys(element(1, hd(Results))),
    maps:from_list([{K, {[maps:get(K, Rc) || {Rc, _} <- Results],
                         [maps:get(K, Rb) || {_, Rb} <- Results]}} || K <- Keys]).

%% Figure lines for alternate/3's result: "<Group>.<metric> <median> <unit>"
%% for the C side, "<Group>_beam.<metric> ..." for the BEAM side, and a
%% "<Group>_rounds.<metric> C1/B1 C2/B2 ..." line (not a figure: the report
%% keeps it for the spread of the ratio). Units: #{metric => unit}.
-spec figure_lines(string(), #{term() => {[number()], [number()]}}, #{term() => string()},
                   string()) -> [string()].
figure_lines(Group, Alt, Units, Suffix) ->
    lists:append(
      [begin
           M = atom_to_list(K) ++ Suffix,
           U = maps:get(K, Units),
           [line(Group, M, median(Cs), U), line(Group ++ "_beam", M, median(Bs), U),
            lists:flatten(io_lib:format("~s_rounds.~s ~s", [Group, M, rounds(Cs, Bs)]))]
       end || {K, {Cs, Bs}} <- lists:sort(maps:to_list(Alt))]).

line(G, M, V, U) -> lists:flatten(io_lib:format("~s.~s ~s ~s", [G, M, num(V), U])).

rounds(Cs, Bs) ->
    string:join([num(C) ++ "/" ++ num(B) || {C, B} <- lists:zip(Cs, Bs)], " ").

num(V) when is_integer(V) -> integer_to_list(V);
num(V) when abs(V) >= 100 -> integer_to_list(round(V));
num(V) -> float_to_list(float(V), [{decimals, 2}]).

%% What the run ran on: CPU model, cores, OTP release, kernel, load average
%% (1, 5, 15 min) at the start.
-spec machine() -> #{atom() => string()}.
machine() ->
    Cpu = case file:read_file("/proc/cpuinfo") of
              {ok, B} ->
                  case re:run(B, "model name\\s*:\\s*([^\\n]+)", [{capture, all_but_first, list}]) of
                      {match, [M]} -> string:trim(M);
                      _ -> "unknown CPU"
                  end;
              _ -> "unknown CPU"
          end,
    Load = case file:read_file("/proc/loadavg") of
               {ok, L} -> string:join(lists:sublist(string:lexemes(binary_to_list(L), " "), 3), " ");
               _ -> "unknown"
           end,
    Kernel = string:trim(os:cmd("uname -sr")),
    #{cpu => Cpu,
      cores => case erlang:system_info(logical_processors_available) of
                   unknown -> integer_to_list(erlang:system_info(logical_processors));
                   N -> integer_to_list(N)
               end,
      otp => erlang:system_info(otp_release) ++ " (erts " ++ erlang:system_info(version) ++ ")",
      kernel => Kernel, load => Load}.
